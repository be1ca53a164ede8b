//! The CPU BERT encoder against Hugging Face on the tiny random BERT fixture
//! (tests/fixtures/bert-tiny, made by scripts/make_fixtures.py): every hidden state of a padded
//! batch with token type ids, the mean-pooled normalised embeddings, the same through a packed
//! (unpadded) layout, and the whole folder through the sentence embedder.

use pgsrm::batch::EncoderInput;
use pgsrm::cpu::bert::CpuEncoder;
use pgsrm::cpu::bert::{bert_forward, sentence_pool_forward};
use pgsrm::model::bert::{BertWeights, Pooling, SentenceConfig, load_config};
use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::SentenceEncoder;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-tiny")
}

struct Cases {
    ids: Vec<u32>,
    types: Vec<u32>,
    mask: Vec<u32>,
    hidden: Vec<f32>,
    embedding: Vec<f32>,
    b: usize,
    t: usize,
}

fn read_i64(st: &SafeTensors, name: &str) -> (Vec<u32>, Vec<usize>) {
    let v = st.tensor(name).unwrap();
    assert_eq!(v.dtype(), Dtype::I64);
    let data = v
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    (data, v.shape().to_vec())
}

fn read_f32(st: &SafeTensors, name: &str) -> Vec<f32> {
    let v = st.tensor(name).unwrap();
    assert_eq!(v.dtype(), Dtype::F32);
    v.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn cases() -> Cases {
    let bytes = std::fs::read(dir().join("cases.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (ids, shape) = read_i64(&st, "input_ids");
    let (types, _) = read_i64(&st, "token_type_ids");
    let (mask, _) = read_i64(&st, "attention_mask");
    Cases {
        ids,
        types,
        mask,
        hidden: read_f32(&st, "last_hidden_state"),
        embedding: read_f32(&st, "embedding"),
        b: shape[0],
        t: shape[1],
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn padded_batch_matches_hugging_face() {
    let cfg = load_config(&dir()).unwrap();
    let w = BertWeights::load(&dir().join("model.safetensors"), &cfg).unwrap();
    let cs = cases();
    let c = cfg.hidden_size;
    // The fixture must exercise what it is meant to: padding and a second segment.
    assert!(cs.mask.contains(&0) && cs.types.contains(&1));

    let input = EncoderInput::padded(&cs.ids, &cs.types, &cs.mask, cs.b, cs.t);
    let hidden = bert_forward(&cfg, &w, &input).unwrap();
    // Every row, padding included: padded queries still attend to the real keys in Hugging Face.
    let d = max_abs_diff(&hidden, &cs.hidden);
    assert!(d < 1e-4, "last_hidden_state differs by {d}");

    let st = SentenceConfig::load(&dir(), &cfg).unwrap();
    assert_eq!(st.pooling, Pooling::Mean);
    assert!(st.normalize);
    let mut emb = vec![0.0; cs.b * c];
    sentence_pool_forward(&mut emb, &hidden, &input, c, st.pooling, st.normalize);
    let d = max_abs_diff(&emb, &cs.embedding);
    assert!(d < 1e-5, "embedding differs by {d}");
}

#[test]
fn packed_layout_gives_the_same_real_rows() {
    let cfg = load_config(&dir()).unwrap();
    let w = BertWeights::load(&dir().join("model.safetensors"), &cfg).unwrap();
    let cs = cases();
    let c = cfg.hidden_size;
    let mut input = EncoderInput::new();
    let mut where_from = Vec::new();
    for s in 0..cs.b {
        let row = s * cs.t..(s + 1) * cs.t;
        let n = cs.mask[row.clone()].iter().filter(|&&m| m == 1).count();
        // Right padding: the real tokens come first.
        assert!(cs.mask[row.start..row.start + n].iter().all(|&m| m == 1));
        input.push(
            &cs.ids[row.start..row.start + n],
            &cs.types[row.start..row.start + n],
        );
        where_from.extend(row.start..row.start + n);
    }
    let hidden = bert_forward(&cfg, &w, &input).unwrap();
    for (r, &src) in where_from.iter().enumerate() {
        let d = max_abs_diff(
            &hidden[r * c..(r + 1) * c],
            &cs.hidden[src * c..(src + 1) * c],
        );
        assert!(d < 1e-4, "packed row {r} (padded row {src}) differs by {d}");
    }
    let mut emb = vec![0.0; cs.b * c];
    sentence_pool_forward(&mut emb, &hidden, &input, c, Pooling::Mean, true);
    let d = max_abs_diff(&emb, &cs.embedding);
    assert!(d < 1e-5, "embedding differs by {d}");
}

#[test]
fn folder_as_embedder_tokenizes_and_embeds_like_the_fixture() {
    let enc = SentenceEncoder::load(&dir(), "bert-tiny", &CpuEncoder).unwrap();
    let texts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir().join("texts.json")).unwrap()).unwrap();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let cs = cases();
    assert_eq!(texts.len(), cs.b);
    let toks = enc.tokenize(&refs).unwrap();
    for (s, tok) in toks.iter().enumerate() {
        let row = &cs.ids[s * cs.t..(s + 1) * cs.t];
        let mask = &cs.mask[s * cs.t..(s + 1) * cs.t];
        let want: Vec<u32> = row
            .iter()
            .zip(mask)
            .filter(|(_, m)| **m == 1)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(tok.ids, want, "token ids of {:?}", texts[s]);
        assert!(tok.type_ids.iter().all(|&t| t == 0));
    }
    assert_eq!(enc.dim(), 32);
    let emb = enc.embed(&refs).unwrap();
    // Rows without a second segment are what a plain single-text call computes.
    for s in 0..cs.b {
        if cs.types[s * cs.t..(s + 1) * cs.t].iter().any(|&t| t != 0) {
            continue;
        }
        let d = max_abs_diff(&emb[s], &cs.embedding[s * 32..(s + 1) * 32]);
        assert!(d < 1e-5, "embedding of {:?} differs by {d}", texts[s]);
    }
}

#[test]
fn bad_folders_name_the_file() {
    let tmp = std::env::temp_dir().join(format!("pgsrm-bert-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(dir().join(f), tmp.join(f)).unwrap();
    }

    // Missing model.safetensors.
    std::fs::remove_file(tmp.join("model.safetensors")).unwrap();
    let e = format!(
        "{:#}",
        SentenceEncoder::load(&tmp, "x", &CpuEncoder).err().unwrap()
    );
    assert!(e.contains("model.safetensors"), "{e}");

    // Truncated weights.
    let bytes = std::fs::read(dir().join("model.safetensors")).unwrap();
    std::fs::write(tmp.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = format!(
        "{:#}",
        SentenceEncoder::load(&tmp, "x", &CpuEncoder).err().unwrap()
    );
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::write(tmp.join("model.safetensors"), &bytes).unwrap();

    // A config that does not fit the weights.
    let cfg = std::fs::read_to_string(dir().join("config.json")).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 65"),
    )
    .unwrap();
    let e = format!(
        "{:#}",
        SentenceEncoder::load(&tmp, "x", &CpuEncoder).err().unwrap()
    );
    assert!(e.contains("intermediate.dense.weight"), "{e}");

    // Unparsable config.
    std::fs::write(tmp.join("config.json"), "{ not json").unwrap();
    let e = format!(
        "{:#}",
        SentenceEncoder::load(&tmp, "x", &CpuEncoder).err().unwrap()
    );
    assert!(e.contains("config.json"), "{e}");

    // Without sentence-transformers files the folder still loads: mean pooling, no normalising.
    std::fs::write(tmp.join("config.json"), &cfg).unwrap();
    let enc = SentenceEncoder::load(&tmp, "x", &CpuEncoder).unwrap();
    assert_eq!(enc.model().sentence.pooling, Pooling::Mean);
    assert!(!enc.model().sentence.normalize);
    std::fs::remove_dir_all(&tmp).unwrap();
}
