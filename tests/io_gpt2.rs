//! GPT-2 checkpoint files: save -> load is bit-exact, the Hugging Face naming variants load, and
//! every kind of bad file gives an error that names the file and the problem.

mod io_util;

use half::{bf16, f16};
use io_util::{TempDir, err_text};
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::io::{SafetensorsFile, gpt2_config_json, load_gpt2, save_gpt2};
use pgsrm::rng::Rng;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::collections::HashMap;
use std::path::Path;

/// (name, shape, values) of one tensor to write.
type Named = (String, Vec<usize>, Vec<f32>);

/// A GPT-2 small enough to write by hand in every dtype.
fn mini_config() -> Gpt2Config {
    Gpt2Config {
        vocab_size: 16,
        n_positions: 8,
        n_embd: 8,
        n_layer: 2,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        bos_token_id: 15,
        eos_token_id: 15,
    }
}

fn write_config(dir: &Path, cfg: &Gpt2Config) {
    std::fs::create_dir_all(dir).unwrap();
    let text = serde_json::to_string_pretty(&gpt2_config_json(cfg)).unwrap();
    std::fs::write(dir.join("config.json"), text).unwrap();
}

/// Write `tensors` (name, shape, f32 values) as safetensors in `dtype`.
fn write_st(path: &Path, tensors: &[Named], dtype: Dtype) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => v
                .iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect(),
            Dtype::BF16 => v
                .iter()
                .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                .collect(),
            Dtype::I64 => v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect(),
            _ => unreachable!(),
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// The model's tensors as (name, shape, values), optionally with the `transformer.` prefix.
fn tensors_of(m: &Gpt2, prefix: &str) -> Vec<Named> {
    m.weights
        .named()
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t.shape.clone(), t.data.clone()))
        .collect()
}

#[test]
fn save_then_load_is_bit_exact_and_replaces_atomically() {
    let tmp = TempDir::new("io-save");
    let cfg = Gpt2Config::named("tiny").unwrap();
    let model = Gpt2::random(cfg.clone(), 11);
    let dir = tmp.join("ckpt");
    save_gpt2(&model, &dir, None).unwrap();
    let back = load_gpt2(&dir).unwrap();
    assert_eq!(back.config, cfg);
    for ((na, a), (nb, b)) in model.weights.named().iter().zip(back.weights.named()) {
        assert_eq!(na, &nb);
        assert_eq!(a.shape, b.shape, "{na}");
        let same = a
            .data
            .iter()
            .zip(&b.data)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{na} changed in a save/load round trip");
    }
    // Saving over an existing checkpoint replaces it whole and leaves no temporary folders behind.
    let other = Gpt2::random(cfg, 12);
    save_gpt2(&other, &dir, None).unwrap();
    assert_eq!(load_gpt2(&dir).unwrap().weights, other.weights);
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["ckpt".to_string()]);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, vec!["config.json", "model.safetensors"]);
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg_json["model_type"], "gpt2");
    assert_eq!(cfg_json["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(cfg_json["layer_norm_epsilon"], 1e-5);
    let st = SafetensorsFile::open(&dir.join("model.safetensors")).unwrap();
    assert_eq!(st.metadata.get("format").map(String::as_str), Some("pt"));
    assert!(st.tensors.contains_key("transformer.h.1.mlp.c_proj.weight"));
}

#[test]
fn loads_hf_naming_variants_and_half_precision() {
    let tmp = TempDir::new("io-variants");
    let cfg = mini_config();
    let model = Gpt2::random(cfg.clone(), 5);
    for (i, (dtype, prefix)) in [
        (Dtype::F32, ""),
        (Dtype::F16, "transformer."),
        (Dtype::BF16, ""),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.join(&format!("m{i}"));
        write_config(&dir, &cfg);
        let mut t = tensors_of(&model, prefix);
        // Buffers that transformers stores and a tied head: all accepted and skipped.
        t.push((
            format!("{prefix}h.0.attn.bias"),
            vec![1, 1, 8, 8],
            vec![1.0; 64],
        ));
        t.push((format!("{prefix}h.1.attn.masked_bias"), vec![], vec![-1e4]));
        t.push((
            "lm_head.weight".into(),
            model.weights.wte.shape.clone(),
            model.weights.wte.data.clone(),
        ));
        write_st(&dir.join("model.safetensors"), &t, dtype);
        let back = load_gpt2(&dir).unwrap();
        for ((name, a), (_, b)) in model.weights.named().iter().zip(back.weights.named()) {
            for (x, y) in a.data.iter().zip(&b.data) {
                let want = match dtype {
                    Dtype::F16 => f16::from_f32(*x).to_f32(),
                    Dtype::BF16 => bf16::from_f32(*x).to_f32(),
                    _ => *x,
                };
                assert_eq!(want.to_bits(), y.to_bits(), "{name} in {dtype:?}");
            }
        }
    }
}

/// A folder with a valid mini checkpoint, to break in one way per test case.
fn good_dir(tmp: &TempDir, name: &str) -> (std::path::PathBuf, Vec<Named>) {
    let dir = tmp.join(name);
    let cfg = mini_config();
    write_config(&dir, &cfg);
    let t = tensors_of(&Gpt2::random(cfg, 1), "");
    write_st(&dir.join("model.safetensors"), &t, Dtype::F32);
    assert!(load_gpt2(&dir).is_ok());
    (dir, t)
}

#[test]
fn bad_files_give_clear_errors() {
    let tmp = TempDir::new("io-bad");

    let e = err_text(load_gpt2(&tmp.join("nowhere")));
    assert!(e.contains("nowhere") && e.contains("does not exist"), "{e}");

    let (dir, _) = good_dir(&tmp, "no-config");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = err_text(load_gpt2(&dir));
    assert!(e.contains("config.json is missing"), "{e}");

    let (dir, _) = good_dir(&tmp, "no-weights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = err_text(load_gpt2(&dir));
    assert!(e.contains("model.safetensors is missing"), "{e}");

    let (dir, _) = good_dir(&tmp, "truncated");
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = err_text(load_gpt2(&dir));
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&p, &bytes[..5]).unwrap();
    let e = err_text(load_gpt2(&dir));
    assert!(e.contains("truncated"), "{e}");

    let (dir, _) = good_dir(&tmp, "corrupt");
    let p = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] = b'#';
    std::fs::write(&p, &bytes).unwrap();
    let e = err_text(load_gpt2(&dir));
    assert!(e.contains("corrupt safetensors header"), "{e}");

    let (dir, mut t) = good_dir(&tmp, "missing-tensor");
    t.retain(|(n, _, _)| n != "h.1.ln_2.bias");
    write_st(&dir.join("model.safetensors"), &t, Dtype::F32);
    let e = err_text(load_gpt2(&dir));
    assert!(e.contains("missing tensor 'h.1.ln_2.bias'"), "{e}");

    let (dir, mut t) = good_dir(&tmp, "wrong-shape");
    let fc = t
        .iter_mut()
        .find(|(n, _, _)| n == "h.0.mlp.c_fc.weight")
        .unwrap();
    fc.1 = vec![32, 8]; // transposed: (out, in) instead of Conv1D's (in, out)
    write_st(&dir.join("model.safetensors"), &t, Dtype::F32);
    let e = err_text(load_gpt2(&dir));
    assert!(
        e.contains("'h.0.mlp.c_fc.weight' has shape [32, 8], expected [8, 32]"),
        "{e}"
    );

    let (dir, mut t) = good_dir(&tmp, "untied");
    let mut head = t[0].clone();
    head.0 = "lm_head.weight".into();
    head.2[3] += 1.0;
    t.push(head);
    write_st(&dir.join("model.safetensors"), &t, Dtype::F32);
    let e = err_text(load_gpt2(&dir));
    assert!(e.contains("lm_head.weight differs"), "{e}");

    let (dir, mut t) = good_dir(&tmp, "foreign");
    t.push(("encoder.layer.0.weight".into(), vec![2], vec![0.0, 1.0]));
    write_st(&dir.join("model.safetensors"), &t, Dtype::F32);
    let e = err_text(load_gpt2(&dir));
    assert!(e.contains("encoder.layer.0.weight"), "{e}");

    let (dir, t) = good_dir(&tmp, "int-dtype");
    write_st(&dir.join("model.safetensors"), &t, Dtype::I64);
    let e = err_text(load_gpt2(&dir));
    assert!(e.contains("has dtype I64, which is not supported"), "{e}");

    let (dir, _) = good_dir(&tmp, "bad-json");
    std::fs::write(dir.join("config.json"), "{\"n_embd\": 8,\n \"n_layer\": }").unwrap();
    let e = err_text(load_gpt2(&dir));
    assert!(
        e.contains("config.json") && e.contains("invalid JSON") && e.contains("line 2"),
        "{e}"
    );

    let (dir, _) = good_dir(&tmp, "llama-config");
    let mut v = gpt2_config_json(&mini_config());
    v["model_type"] = "llama".into();
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let e = err_text(load_gpt2(&dir));
    assert!(
        e.contains("config.json") && e.contains("model_type is 'llama'"),
        "{e}"
    );

    let (dir, _) = good_dir(&tmp, "wrong-width");
    let mut cfg = mini_config();
    cfg.n_embd = 12;
    write_config(&dir, &cfg);
    let e = err_text(load_gpt2(&dir));
    assert!(
        e.contains("'wte.weight' has shape [16, 8], expected [16, 12]"),
        "{e}"
    );
}

#[test]
fn safetensors_reader_matches_the_reference_crate() {
    // Our reader parses the header itself; check it against the safetensors crate's parser on a
    // file with tensors of mixed dtypes and an empty one.
    let tmp = TempDir::new("io-st");
    let p = tmp.join("x.safetensors");
    let mut rng = Rng::new(9);
    let vals: Vec<f32> = (0..60).map(|_| rng.normal() as f32).collect();
    let t = vec![
        ("a".to_string(), vec![3, 4], vals[..12].to_vec()),
        ("b".to_string(), vec![0], vec![]),
        ("c".to_string(), vec![2, 3, 8], vals[12..].to_vec()),
    ];
    write_st(&p, &t, Dtype::BF16);
    let bytes = std::fs::read(&p).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut ours = SafetensorsFile::open(&p).unwrap();
    assert_eq!(ours.tensors.len(), 3);
    for (name, _, _) in &t {
        let r = reference.tensor(name).unwrap();
        let want: Vec<f32> = r
            .data()
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        let got = ours.read(name).unwrap();
        assert_eq!(got.shape, r.shape());
        assert_eq!(got.data, want, "{name}");
    }
}
