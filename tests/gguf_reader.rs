//! The GGUF reader on small files written here: every metadata type, the four tensor types with
//! blocks built byte by byte (expected values from the block formulas), alignment, and the errors.

use half::f16;
use pgsrm::model::gguf::*;
use pgsrm::model::llama::{Llama, LlamaConfig, permute_rotary_rows};
use std::path::Path;

fn s(k: &str) -> String {
    k.to_string()
}

fn metadata() -> Vec<(String, GgufValue)> {
    vec![
        (s("general.architecture"), GgufValue::String(s("test"))),
        (s("general.alignment"), GgufValue::U32(64)),
        (s("t.u8"), GgufValue::U8(200)),
        (s("t.i8"), GgufValue::I8(-100)),
        (s("t.u16"), GgufValue::U16(60000)),
        (s("t.i16"), GgufValue::I16(-30000)),
        (s("t.u32"), GgufValue::U32(4_000_000_000)),
        (s("t.i32"), GgufValue::I32(-2_000_000_000)),
        (s("t.f32"), GgufValue::F32(1.5e-5)),
        (s("t.bool"), GgufValue::Bool(true)),
        (s("t.str"), GgufValue::String(s("héllo"))),
        (s("t.u64"), GgufValue::U64(1 << 40)),
        (s("t.i64"), GgufValue::I64(-(1 << 40))),
        (s("t.f64"), GgufValue::F64(-0.125)),
        (
            s("t.arr"),
            GgufValue::Array(vec![GgufValue::String(s("a b")), GgufValue::String(s("c"))]),
        ),
        (
            s("t.nested"),
            GgufValue::Array(vec![
                GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(-2)]),
                GgufValue::Array(vec![GgufValue::I32(3)]),
            ]),
        ),
        (s("t.empty"), GgufValue::Array(vec![])),
    ]
}

/// Tensors with hand-made bytes and the values they must decode to.
fn tensors() -> (Vec<GgufTensorData>, Vec<Vec<f32>>) {
    let mut out = Vec::new();
    let mut want = Vec::new();

    let f32v: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
    out.push(GgufTensorData {
        name: s("a.f32"),
        shape: vec![2, 3],
        ggml_type: GgmlType::F32,
        raw: f32v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    });
    want.push(f32v);

    let f16v = [1.0f32, -2.5, 0.5, 65504.0];
    out.push(GgufTensorData {
        name: s("b.f16"),
        shape: vec![4],
        ggml_type: GgmlType::F16,
        raw: f16v
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect(),
    });
    want.push(f16v.to_vec());

    // Q8_0, two blocks: scale d, then 32 signed bytes; value = q * d.
    let mut raw = Vec::new();
    let mut w = Vec::new();
    for (blk, d) in [(0, 0.5f32), (1, -0.125f32)] {
        raw.extend(f16::from_f32(d).to_le_bytes());
        for j in 0..32i32 {
            let q = (j - 16) * (blk * 3 + 1);
            let q = q.clamp(-128, 127) as i8;
            raw.push(q as u8);
            w.push(q as f32 * d);
        }
    }
    out.push(GgufTensorData {
        name: s("c.q8_0"),
        shape: vec![2, 32],
        ggml_type: GgmlType::Q8_0,
        raw,
    });
    want.push(w);

    // Q4_1, one block: d, min, then 16 bytes; byte j holds value j (low nibble) and j + 16 (high).
    let (d, m) = (0.25f32, -1.0f32);
    let mut raw = Vec::new();
    raw.extend(f16::from_f32(d).to_le_bytes());
    raw.extend(f16::from_f32(m).to_le_bytes());
    let mut w = vec![0.0f32; 32];
    for j in 0..16u8 {
        let (lo, hi) = (j, 15 - j);
        raw.push(lo | (hi << 4));
        w[j as usize] = lo as f32 * d + m;
        w[j as usize + 16] = hi as f32 * d + m;
    }
    out.push(GgufTensorData {
        name: s("d.q4_1"),
        shape: vec![32],
        ggml_type: GgmlType::Q4_1,
        raw,
    });
    want.push(w);
    (out, want)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pgsrm-gguf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn reads_metadata_and_all_four_tensor_types() {
    let dir = tmpdir("read");
    let (ts, want) = tensors();
    let path = dir.join("t.gguf");
    write_gguf(&path, &metadata(), &ts).unwrap();
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_offset % 64, 0);
    assert_eq!(g.metadata, metadata());
    assert_eq!(g.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_f64("t.f64").unwrap(), -0.125);
    assert_eq!(g.get_str_array("t.arr").unwrap(), vec!["a b", "c"]);
    assert!(g.get_u64("t.i8").is_err());
    for (t, w) in ts.iter().zip(&want) {
        let info = g.tensor_info(&t.name).unwrap();
        assert_eq!(info.offset % 64, 0, "{} is aligned", t.name);
        let got = g.tensor(&t.name).unwrap();
        assert_eq!(got.shape, t.shape, "{}", t.name);
        assert_eq!(&got.data, w, "{}", t.name);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dims_are_stored_fastest_first() {
    let (ts, _) = tensors();
    let bytes = encode_gguf(&[], &ts[..1]).unwrap();
    // Header (4 + 4 + 8 + 8), then the tensor name (8 + 5), n_dims (4), then the dims.
    let at = 24 + 8 + 5;
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 2);
    let d0 = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap());
    let d1 = u64::from_le_bytes(bytes[at + 12..at + 20].try_into().unwrap());
    assert_eq!((d0, d1), (3, 2), "a (2, 3) tensor is listed as [3, 2]");
    let g = GgufFile::parse(bytes, Path::new("mem")).unwrap();
    assert_eq!(g.alignment, DEFAULT_ALIGNMENT);
    assert_eq!(g.tensors[0].shape, vec![2, 3]);
}

#[test]
fn quantizers_round_trip_within_half_a_step() {
    let x: Vec<f32> = (0..64)
        .map(|i| ((i * 37 % 64) as f32 - 30.0) / 7.0)
        .collect();
    for (ty, raw) in [
        (GgmlType::Q8_0, quantize_q8_0(&x)),
        (GgmlType::Q4_1, quantize_q4_1(&x)),
    ] {
        let mut y = vec![0.0f32; 64];
        dequantize(ty, &raw, &mut y);
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let (lo, hi) = xb
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, c), &v| (a.min(v), c.max(v)));
            let step = match ty {
                GgmlType::Q8_0 => lo.abs().max(hi.abs()) / 127.0,
                _ => (hi - lo) / 15.0,
            };
            for (a, c) in xb.iter().zip(yb) {
                // Half a step, plus the f16 rounding of the scale and minimum.
                assert!(
                    (a - c).abs() <= 0.5 * step + 4e-3 * a.abs().max(1.0),
                    "{ty:?} block {b}: {a} vs {c}"
                );
            }
        }
    }
}

#[test]
fn clear_errors_for_bad_files() {
    let dir = tmpdir("err");
    let (ts, _) = tensors();
    let good = encode_gguf(&metadata(), &ts).unwrap();

    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGML");
    let e = format!(
        "{:#}",
        GgufFile::open(write(&dir, "magic.gguf", &bad))
            .err()
            .unwrap()
    );
    assert!(e.contains("bad magic") && e.contains("magic.gguf"), "{e}");

    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = format!(
        "{:#}",
        GgufFile::open(write(&dir, "v1.gguf", &bad)).err().unwrap()
    );
    assert!(e.contains("version 1"), "{e}");

    for cut in [3, 20, 100, good.len() / 2, good.len() - 1] {
        let e = format!(
            "{:#}",
            GgufFile::parse(good[..cut].to_vec(), Path::new("x"))
                .err()
                .unwrap()
        );
        assert!(
            e.contains("truncated") || e.contains("no GGUF header"),
            "cut at {cut}: {e}"
        );
    }

    // Patch the type of the Q4_1 tensor to 12 (Q4_K) in the tensor table.
    let g = GgufFile::parse(good.clone(), Path::new("x")).unwrap();
    let name = b"d.q4_1";
    let at = good.windows(name.len()).rposition(|w| w == name).unwrap() + name.len();
    // After the name: n_dims (4) and one dim (8), then the type.
    let ty_at = at + 4 + 8;
    assert_eq!(
        u32::from_le_bytes(good[ty_at..ty_at + 4].try_into().unwrap()),
        3
    );
    let mut bad = good.clone();
    bad[ty_at..ty_at + 4].copy_from_slice(&12u32.to_le_bytes());
    let e = format!(
        "{:#}",
        GgufFile::open(write(&dir, "q4k.gguf", &bad)).err().unwrap()
    );
    assert!(
        e.contains("Q4_K") && e.contains("d.q4_1") && e.contains("q4k.gguf"),
        "{e}"
    );
    drop(g);

    // A non-Llama architecture is named in the error.
    let e = format!(
        "{:#}",
        LlamaConfig::from_gguf(&GgufFile::open(write(&dir, "arch.gguf", &good)).unwrap())
            .err()
            .unwrap()
    );
    assert!(
        e.contains("architecture 'test'") && e.contains("arch.gguf"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A tiny Llama written as a GGUF file the way converters write one (q/k rows permuted, names
/// mapped, head tied) loads back into the same weights.
#[test]
fn tiny_llama_gguf_loads_in_hugging_face_layout() {
    let cfg = LlamaConfig::from_json_str(
        r#"{"vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "rope_theta": 500.0, "tie_word_embeddings": true, "max_position_embeddings": 64}"#,
    )
    .unwrap();
    let model = Llama::random(cfg.clone(), 5);
    let u = |v: usize| GgufValue::U32(v as u32);
    let md = vec![
        (s("general.architecture"), GgufValue::String(s("llama"))),
        (s("llama.block_count"), u(2)),
        (s("llama.embedding_length"), u(32)),
        (s("llama.feed_forward_length"), u(48)),
        (s("llama.attention.head_count"), u(4)),
        (s("llama.attention.head_count_kv"), u(2)),
        (s("llama.rope.freq_base"), GgufValue::F32(500.0)),
        (
            s("llama.attention.layer_norm_rms_epsilon"),
            GgufValue::F32(1e-5),
        ),
        (s("llama.context_length"), u(64)),
        (s("llama.vocab_size"), u(40)),
    ];
    let mut ts = Vec::new();
    for (name, t) in model.weights.named() {
        let mut t = t.clone();
        if name.ends_with("q_proj.weight") {
            t = permute_rotary_rows(&t, 4).unwrap();
        } else if name.ends_with("k_proj.weight") {
            t = permute_rotary_rows(&t, 2).unwrap();
        }
        ts.push(GgufTensorData {
            name: pgsrm::model::llama::gguf_name(&name).unwrap(),
            shape: t.shape.clone(),
            ggml_type: GgmlType::F32,
            raw: t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        });
    }
    let g = GgufFile::parse(encode_gguf(&md, &ts).unwrap(), Path::new("tiny.gguf")).unwrap();
    let back = Llama::from_gguf(&g).unwrap();
    assert_eq!(back.config.n_kv_heads(), 2);
    assert_eq!(back.config.rope_theta, 500.0);
    assert!(back.config.tie_word_embeddings);
    assert_eq!(back.weights, model.weights);
}
