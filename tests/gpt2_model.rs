//! The whole CPU GPT-2: gradients against finite differences, left padding, chosen positions.

use pgsrm::batch::Batch;
use pgsrm::cpu::gpt2::{
    Gpt2Activations, backward, forward, forward_into, lm_loss, next_token_pairs,
};
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::rng::Rng;

fn small_model(seed: u64) -> Gpt2 {
    let config = Gpt2Config {
        vocab_size: 37,
        n_positions: 16,
        n_embd: 12,
        n_layer: 2,
        n_head: 3,
        layer_norm_epsilon: 1e-5,
        bos_token_id: 0,
        eos_token_id: 0,
    };
    let mut model = Gpt2::random(config, seed);
    // GPT-2's init gives near-uniform outputs and tiny gradients; larger, noisier parameters
    // (layernorm gains and biases included) exercise every term of the backward pass.
    let mut rng = Rng::new(seed + 100);
    for (_, t) in model.weights.named_mut() {
        for x in t.data.iter_mut() {
            *x += (rng.normal() * 0.3) as f32;
        }
    }
    model
}

fn seqs() -> Vec<Vec<u32>> {
    vec![
        vec![5, 9, 2, 30, 11, 7],
        vec![3, 3, 36, 1],
        vec![8, 20, 4, 17, 25],
    ]
}

fn loss_of(model: &Gpt2, batch: &Batch) -> f64 {
    let (pairs, targets) = next_token_pairs(batch);
    let (logits, _) = forward(model, batch, &pairs).unwrap();
    lm_loss(&logits.data, &targets, model.config.vocab_size).0 as f64
}

/// The gradient of the LM loss of a left-padded batch, for every parameter tensor, against the
/// central difference along a random unit direction in that tensor. The model computes in f32:
/// the loss (about 4) carries rounding near 1e-6, which the step of 1e-2 turns into about 1e-4,
/// plus the O(step^2) truncation; so |analytic - numeric| <= 2e-3 + 2e-2 |numeric|.
#[test]
fn whole_model_gradient_matches_finite_differences() {
    let mut model = small_model(1);
    let batch = Batch::left_padded(&seqs(), 0).unwrap();
    assert_eq!(batch.start, vec![0, 2, 1]);
    let (pairs, targets) = next_token_pairs(&batch);
    assert_eq!(pairs.len(), 5 + 3 + 4);
    let (logits, mut acts) = forward(&model, &batch, &pairs).unwrap();
    let (_, dlogits) = lm_loss(&logits.data, &targets, model.config.vocab_size);
    let grads = backward(&model, &mut acts, &dlogits);
    let mut rng = Rng::new(2);
    let names: Vec<String> = model.weights.named().into_iter().map(|(n, _)| n).collect();
    let mut checked = 0;
    for (i, name) in names.iter().enumerate() {
        let g = grads.named()[i].1.data.clone();
        let n = g.len();
        let mut d: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        // wpe rows beyond the longest sequence never take part; keep the direction where it matters.
        if name == "wpe.weight" {
            for x in d[6 * 12..].iter_mut() {
                *x = 0.0;
            }
        }
        let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt();
        d.iter_mut().for_each(|x| *x /= norm);
        let ana: f64 = g.iter().zip(&d).map(|(&a, &b)| a as f64 * b).sum();
        let h = 1e-2;
        let orig = model.weights.named()[i].1.data.clone();
        let at = |sign: f64, model: &mut Gpt2| {
            let t = model.weights.named_mut().swap_remove(i).1;
            for ((x, &o), &dd) in t.data.iter_mut().zip(&orig).zip(&d) {
                *x = (o as f64 + sign * h * dd) as f32;
            }
            loss_of(model, &batch)
        };
        let lp = at(1.0, &mut model);
        let lm = at(-1.0, &mut model);
        model.weights.named_mut().swap_remove(i).1.data = orig;
        let num = (lp - lm) / (2.0 * h);
        assert!(
            (ana - num).abs() <= 2e-3 + 2e-2 * num.abs(),
            "{name}: analytic {ana} vs numeric {num}"
        );
        checked += 1;
    }
    assert_eq!(checked, 2 + 12 * 2 + 2);
    // Tokens that never occur get no embedding gradient except through the tied head.
    assert!(grads.wte.data.iter().all(|x| x.is_finite()));
    assert!(grads.wpe.data[6 * 12..].iter().all(|&x| x == 0.0));
}

#[test]
fn padded_rows_give_the_same_logits_as_each_sequence_alone() {
    let model = small_model(3);
    let all = seqs();
    let batch = Batch::left_padded(&all, 0).unwrap();
    let positions = batch.real_positions();
    let (logits, _) = forward(&model, &batch, &positions).unwrap();
    let v = model.config.vocab_size;
    for (r, s) in all.iter().enumerate() {
        let alone = Batch::left_padded(std::slice::from_ref(s), 0).unwrap();
        let (want, _) = forward(&model, &alone, &alone.real_positions()).unwrap();
        let first = positions.iter().position(|&(rr, _)| rr == r).unwrap();
        let got = &logits.data[first * v..(first + s.len()) * v];
        for (x, y) in got.iter().zip(&want.data) {
            assert!((x - y).abs() < 1e-5, "row {r}: {x} vs {y}");
        }
    }
}

#[test]
fn chosen_positions_and_reused_activations_agree_with_a_full_forward() {
    let model = small_model(4);
    let v = model.config.vocab_size;
    let batch = Batch::left_padded(&seqs(), 0).unwrap();
    let all = batch.real_positions();
    let (full, _) = forward(&model, &batch, &all).unwrap();
    let pick = [(2usize, 5usize), (0, 0), (1, 3)];
    let mut acts = Gpt2Activations::new();
    // A larger batch first, so the reused buffers hold stale values of another shape.
    let big = Batch::left_padded(&[vec![1; 9], vec![2; 3]], 0).unwrap();
    forward_into(&model, &big, &big.real_positions(), &mut acts).unwrap();
    forward_into(&model, &batch, &pick, &mut acts).unwrap();
    assert_eq!(acts.logits.len(), pick.len() * v);
    for (i, p) in pick.iter().enumerate() {
        let j = all.iter().position(|q| q == p).unwrap();
        // The matrix product may block differently for another row count: equal up to rounding.
        let got = &acts.logits[i * v..(i + 1) * v];
        for (x, y) in got.iter().zip(&full.data[j * v..(j + 1) * v]) {
            assert!((x - y).abs() < 1e-5, "{p:?}: {x} vs {y}");
        }
        // The logits are the final hidden state times the embedding.
        let h = acts.final_hidden(p.0, p.1);
        for (tok, &z) in got.iter().enumerate().step_by(7) {
            let e = &model.weights.wte.data[tok * 12..(tok + 1) * 12];
            let dot: f32 = h.iter().zip(e).map(|(a, b)| a * b).sum();
            assert!((dot - z).abs() < 1e-5, "{p:?} token {tok}: {dot} vs {z}");
        }
    }
}

#[test]
fn lm_loss_is_the_mean_negative_log_likelihood() {
    let model = small_model(5);
    let v = model.config.vocab_size;
    let batch = Batch::left_padded(&seqs(), 0).unwrap();
    let (pairs, targets) = next_token_pairs(&batch);
    let (logits, _) = forward(&model, &batch, &pairs).unwrap();
    let (loss, dl) = lm_loss(&logits.data, &targets, v);
    let mut want = 0.0f64;
    for (row, &t) in logits.data.chunks(v).zip(&targets) {
        let lse = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        want += lse - row[t as usize] as f64;
    }
    want /= targets.len() as f64;
    assert!((loss as f64 - want).abs() < 1e-5, "{loss} vs {want}");
    // Each row of the gradient sums to zero (softmax minus one-hot, scaled by 1/M).
    for row in dl.chunks(v) {
        assert!(row.iter().sum::<f32>().abs() < 1e-6);
    }
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let model = small_model(6);
    let e = Batch::left_padded(&[vec![1, 2], vec![]], 0).unwrap_err();
    assert!(e.to_string().contains("sequence 1"), "{e}");
    let b = Batch::left_padded(&[vec![1, 99]], 0).unwrap();
    let e = forward(&model, &b, &[(0, 0)]).unwrap_err();
    assert!(e.to_string().contains("token id 99"), "{e}");
    let b = Batch::left_padded(&[vec![1; 17]], 0).unwrap();
    let e = forward(&model, &b, &[(0, 0)]).unwrap_err();
    assert!(e.to_string().contains("context of 16"), "{e}");
    let b = Batch::left_padded(&[vec![1; 3]], 0).unwrap();
    let e = forward(&model, &b, &[(0, 3)]).unwrap_err();
    assert!(e.to_string().contains("(0, 3)"), "{e}");
}
