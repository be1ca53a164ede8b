//! all-MiniLM-L6-v2 on the CPU against `sentence-transformers` (tests/fixtures/minilm, made by
//! scripts/make_fixtures.py): identical word-piece ids and cosine >= 0.99999 for every text,
//! including an empty one and a paragraph that is truncated at 256 word pieces. The model folder
//! comes through the asset code, as every user of the embedder gets it.

use pgsrm::cpu::bert::CpuEncoder;
use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::{
    EMBEDDER_NAMES, EmbedderOptions, MINILM_ASSET, SentenceEncoder, StaticMean, by_name,
};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm")
}

fn model_dir() -> PathBuf {
    pgsrm::assets::resolve_dir(MINILM_ASSET).expect("all-MiniLM-L6-v2 through the asset code")
}

fn encoder() -> &'static SentenceEncoder {
    static ENC: OnceLock<SentenceEncoder> = OnceLock::new();
    ENC.get_or_init(|| SentenceEncoder::load(&model_dir(), "minilm", &CpuEncoder).unwrap())
}

fn texts() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("texts.json")).unwrap()).unwrap()
}

fn reference() -> Vec<Vec<f32>> {
    let bytes = std::fs::read(fixtures().join("embeddings.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("embeddings").unwrap();
    let d = t.shape()[1];
    let flat: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    flat.chunks_exact(d).map(|r| r.to_vec()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn token_ids_match_sentence_transformers() {
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let want: Vec<Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap())
            .unwrap();
    let got = encoder().tokenize(&refs).unwrap();
    assert_eq!(got.len(), want.len());
    for ((g, w), t) in got.iter().zip(&want).zip(&texts) {
        assert_eq!(&g.ids, w, "token ids of {t:?}");
    }
    assert!(want.iter().any(|w| w.len() == 256), "a text is truncated");
    assert!(want.iter().any(|w| w.len() == 2), "an empty text is there");
}

#[test]
fn embeddings_match_sentence_transformers() {
    let texts = texts();
    assert!(texts.len() >= 30);
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let want = reference();
    let enc = encoder();
    assert_eq!(enc.dim(), 384);
    let got = enc.embed(&refs).unwrap();
    let mut worst = (1.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        if c < worst.0 {
            worst = (c, i);
        }
        assert!(c >= 0.99999, "cosine {c} for {:?}", texts[i]);
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    println!(
        "lowest cosine to sentence-transformers: 1 - {:.2e} ({:?})",
        1.0 - worst.0,
        texts[worst.1].chars().take(40).collect::<String>()
    );

    // One text at a time gives the same vectors as the packed batch.
    for i in [0, 3, texts.len() - 1] {
        let one = enc.embed(&[refs[i]]).unwrap();
        let d = one[0]
            .iter()
            .zip(&got[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-5, "text {i} alone differs from the batch by {d}");
    }
}

#[test]
fn repeated_texts_in_a_call_get_the_vectors_of_single_texts() {
    let every = SentenceEncoder::load(&model_dir(), "minilm", &CpuEncoder)
        .unwrap()
        .with_dedup(false);
    let texts = ["red", "blue", "red", "dark green", "blue", "red"];
    let merged = encoder().embed(&texts).unwrap();
    let each = every.embed(&texts).unwrap();
    assert_eq!(merged.len(), texts.len());
    for (i, (a, b)) in merged.iter().zip(&each).enumerate() {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-5, "text {i} differs by {d}");
    }
    assert_eq!(merged[0], merged[2]);
    assert_ne!(merged[0], merged[1]);
}

#[test]
fn factory_builds_minilm_and_rejects_unknown_names() {
    let on_cpu = EmbedderOptions {
        encoders: Some(std::sync::Arc::new(CpuEncoder)),
        ..Default::default()
    };
    let e = by_name("minilm", &on_cpu).unwrap();
    assert_eq!(e.dim(), 384);
    assert_eq!(e.name(), "minilm");
    let v = e.embed(&["red", "red"]).unwrap();
    assert_eq!(v[0], v[1]);

    let err = format!(
        "{:#}",
        by_name("minilm-xl", &EmbedderOptions::default())
            .err()
            .unwrap()
    );
    for n in EMBEDDER_NAMES {
        assert!(err.contains(n), "'{err}' should list '{n}'");
    }
    let err = format!(
        "{:#}",
        by_name("word-vectors", &EmbedderOptions::default())
            .err()
            .unwrap()
    );
    assert!(err.contains("word-vector file"), "{err}");
}

#[test]
fn static_embedder_is_the_mean_of_word_piece_embeddings() {
    let dir = model_dir();
    let stat = StaticMean::load(&dir, "static").unwrap();
    assert_eq!(stat.dim(), 384);

    // Reference computed here from the fixture's token ids and the raw embedding table.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let table = st.tensor("embeddings.word_embeddings.weight").unwrap();
    let row = |id: u32| -> Vec<f32> {
        let b = &table.data()[id as usize * 384 * 4..(id as usize + 1) * 384 * 4];
        b.chunks_exact(4)
            .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
            .collect()
    };
    let texts = texts();
    let tokens: Vec<Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap())
            .unwrap();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let got = stat.embed(&refs).unwrap();
    for ((g, toks), t) in got.iter().zip(&tokens).zip(&texts) {
        // [CLS] and [SEP] are left out.
        let inner = &toks[1..toks.len() - 1];
        let mut want = vec![0.0f64; 384];
        for &id in inner {
            for (w, x) in want.iter_mut().zip(row(id)) {
                *w += x as f64;
            }
        }
        for (k, w) in want.iter().enumerate() {
            let w = if inner.is_empty() {
                0.0
            } else {
                *w / inner.len() as f64
            };
            assert!(
                (g[k] as f64 - w).abs() < 1e-5,
                "static vector of {t:?} differs at {k}"
            );
        }
    }
}
