//! Parity with `transformers.LlamaForCausalLM` on the committed tiny fixture
//! (tests/fixtures/llama-tiny, made by scripts/make_fixtures.py): logits where the mask is 1,
//! the loss over the fixture's labels, and the gradient of every parameter.

use pgsrm::batch::Batch;
use pgsrm::cpu::llama::{backward, forward, log_softmax};
use pgsrm::model::llama::{Llama, read_safetensors};
use pgsrm::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama-tiny")
}

/// max |a - b| / max(max |b|, tiny): relative to the tensor's scale, so that entries near zero do
/// not dominate.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn batch_of(cases: &BTreeMap<String, Tensor>, key: &str) -> (Batch, Vec<i64>) {
    let ids = &cases[&format!("{key}.input_ids")];
    let mask = &cases[&format!("{key}.attention_mask")];
    let pos = &cases[&format!("{key}.position_ids")];
    let labels = &cases[&format!("{key}.labels")];
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let mut start = vec![0; b];
    for bi in 0..b {
        let row = &mask.data[bi * t..(bi + 1) * t];
        start[bi] = row.iter().position(|&m| m == 1.0).unwrap_or(t);
        // Left padding only, and positions count from the first real token as ours do.
        assert!(row[start[bi]..].iter().all(|&m| m == 1.0));
        for ti in start[bi]..t {
            assert_eq!(pos.data[bi * t + ti] as usize, ti - start[bi]);
        }
    }
    let batch = Batch {
        tokens: ids.data.iter().map(|&x| x as u32).collect(),
        b,
        t,
        start,
    };
    (batch, labels.data.iter().map(|&x| x as i64).collect())
}

fn check_case(key: &str) {
    let model = Llama::load_hf(fixture_dir()).unwrap();
    let cases = read_safetensors(fixture_dir().join("cases.safetensors")).unwrap();
    let (batch, labels) = batch_of(&cases, key);
    let (b, t, v) = (batch.b, batch.t, model.config.vocab_size);

    // Logits at every real position.
    let real = batch.real_positions();
    let logits = forward(&model, &batch, &real).unwrap().0.data;
    let want = &cases[&format!("{key}.logits")];
    let want_rows: Vec<f32> = real
        .iter()
        .flat_map(|&(r, ti)| {
            want.data[(r * t + ti) * v..(r * t + ti + 1) * v]
                .iter()
                .copied()
        })
        .collect();
    let e = rel_err(&logits, &want_rows);
    assert!(e < 1e-4, "{key}: logits relative error {e}");

    // Loss and gradients: row t predicts labels[t + 1] where that label is not -100.
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for bi in 0..b {
        for ti in 0..t - 1 {
            let l = labels[bi * t + ti + 1];
            if l != -100 {
                positions.push((bi, ti));
                targets.push(l as usize);
            }
        }
    }
    let (logits, mut acts) = forward(&model, &batch, &positions).unwrap();
    let logits = logits.data;
    let count = positions.len() as f32;
    let mut loss = 0.0f32;
    let mut dlogits = vec![0.0f32; logits.len()];
    for (i, &tg) in targets.iter().enumerate() {
        let lp = log_softmax(&logits[i * v..(i + 1) * v]);
        loss -= lp[tg];
        for (d, &l) in dlogits[i * v..(i + 1) * v].iter_mut().zip(&lp) {
            *d = l.exp() / count;
        }
        dlogits[i * v + tg] -= 1.0 / count;
    }
    loss /= count;
    let want_loss = cases[&format!("{key}.loss")].data[0];
    assert!(
        (loss - want_loss).abs() < 1e-4 * want_loss.abs(),
        "{key}: loss {loss} vs {want_loss}"
    );
    let grads = backward(&model, &mut acts, &dlogits);
    let mut checked = 0;
    for (name, g) in grads.named() {
        let want = &cases[&format!("{key}.grad.{name}")];
        assert_eq!(g.shape, want.shape, "{name}");
        let e = rel_err(&g.data, &want.data);
        assert!(e < 1e-3, "{key}: gradient of {name}: relative error {e}");
        checked += 1;
    }
    let expected = cases
        .keys()
        .filter(|k| k.starts_with(&format!("{key}.grad.")))
        .count();
    assert_eq!(
        checked, expected,
        "every parameter of the fixture has a gradient"
    );
}

#[test]
fn llama_tiny_plain_matches_transformers() {
    check_case("plain");
}

#[test]
fn llama_tiny_left_padded_matches_transformers() {
    check_case("padded");
}
