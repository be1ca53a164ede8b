//! Parity with `transformers.GPT2LMHeadModel` on the committed tiny fixture
//! (tests/fixtures/gpt2-tiny, made by scripts/make_fixtures.py): logits at real positions within
//! 1e-4 relative, the LM loss within 1e-5 relative, every parameter gradient within 1e-3 relative.
//! Relative errors are taken against the largest magnitude of the reference tensor, so that
//! entries near zero do not dominate.

use pgsrm::batch::Batch;
use pgsrm::cpu::gpt2::{backward, forward, lm_loss, next_token_pairs};
use pgsrm::model::io::load_gpt2;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny")
}

/// Every tensor of the cases file as (shape, values in f64); i64 and f32 are the dtypes written.
fn read_cases() -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let path = fixture_dir().join("cases.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the fixture comes from scripts/make_fixtures.py --only gpt2-tiny",
            path.display()
        )
    });
    let st = SafeTensors::deserialize(&bytes).expect("cases.safetensors parses");
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    out
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
    let worst = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y).abs()));
    worst / scale
}

fn check_case(key: &str) {
    let model = load_gpt2(&fixture_dir()).expect("gpt2-tiny fixture loads");
    let cases = read_cases();
    let get = |n: &str| {
        cases
            .get(&format!("{key}.{n}"))
            .unwrap_or_else(|| panic!("cases.safetensors has no {key}.{n}"))
    };
    let (shape, ids) = get("input_ids");
    let (b, t) = (shape[0], shape[1]);
    let v = model.config.vocab_size;
    let mask = &get("attention_mask").1;
    let pos = &get("position_ids").1;
    let labels = &get("labels").1;

    // Rebuild the batch from the mask: left padding only, positions counted from the first real token.
    let mut seqs = Vec::new();
    for r in 0..b {
        let row = &mask[r * t..(r + 1) * t];
        let st = row
            .iter()
            .position(|&m| m == 1.0)
            .expect("a row with tokens");
        assert!(
            row[st..].iter().all(|&m| m == 1.0),
            "{key}: row {r} is not left padded"
        );
        for i in st..t {
            assert_eq!(
                pos[r * t + i] as usize,
                i - st,
                "{key}: position id of ({r}, {i})"
            );
        }
        seqs.push(
            ids[r * t + st..(r + 1) * t]
                .iter()
                .map(|&x| x as u32)
                .collect::<Vec<_>>(),
        );
    }
    let batch = Batch::left_padded(&seqs, 0).unwrap();
    assert_eq!((batch.b, batch.t), (b, t));

    // Logits at every real position.
    let real = batch.real_positions();
    let (logits, _) = forward(&model, &batch, &real).unwrap();
    let mut want = Vec::with_capacity(real.len() * v);
    for &(r, i) in &real {
        want.extend_from_slice(&get("logits").1[(r * t + i) * v..(r * t + i + 1) * v]);
    }
    let e = rel_err(&logits.data, &want);
    eprintln!("{key}: logits {e:.2e} relative");
    assert!(e < 1e-4, "{key}: logits differ by {e:e} relative");

    // The fixture's labels must ask for exactly our next-token pairs: every prediction from a
    // real position, none from padding.
    let (pairs, targets) = next_token_pairs(&batch);
    let mut from_labels = Vec::new();
    for r in 0..b {
        for i in 0..t - 1 {
            let l = labels[r * t + i + 1];
            if l != -100.0 {
                assert!(
                    i >= batch.start[r],
                    "{key}: label at ({r}, {}) is predicted from a padding position",
                    i + 1
                );
                from_labels.push(((r, i), l as u32));
            }
        }
    }
    let ours: Vec<_> = pairs.iter().copied().zip(targets.iter().copied()).collect();
    assert_eq!(
        ours, from_labels,
        "{key}: labels and next-token pairs differ"
    );

    let (logits, mut acts) = forward(&model, &batch, &pairs).unwrap();
    let (loss, dlogits) = lm_loss(&logits.data, &targets, v);
    let want_loss = get("loss").1[0];
    let e = (loss as f64 - want_loss).abs() / want_loss.abs();
    assert!(
        e < 1e-5,
        "{key}: loss {loss} vs {want_loss} ({e:e} relative)"
    );

    eprintln!("{key}: loss {loss} vs {want_loss} ({e:.2e} relative)");
    let grads = backward(&model, &mut acts, &dlogits);
    let mut checked = 0;
    let mut worst = 0.0f64;
    for (name, g) in grads.named() {
        let (shape, want) = get(&format!("grad.transformer.{name}"));
        assert_eq!(&g.shape, shape, "{key}: shape of the gradient of {name}");
        let e = rel_err(&g.data, want);
        assert!(
            e < 1e-3,
            "{key}: gradient of {name} differs by {e:e} relative"
        );
        worst = worst.max(e);
        checked += 1;
    }
    eprintln!("{key}: worst parameter gradient {worst:.2e} relative");
    assert_eq!(checked, 4 + 12 * model.config.n_layer);
}

#[test]
fn plain_batch_matches_transformers() {
    check_case("plain");
}

#[test]
fn left_padded_batch_matches_transformers() {
    check_case("padded");
}
