//! The sampler: frequencies follow the (filtered) softmax, greedy picks the arg-max, and the
//! returned log-probability is that of the unfiltered tempered softmax.

use pgsrm::rng::Rng;
use pgsrm::sample::{SamplingParams, sample};

const LOGITS: [f32; 6] = [1.0, -0.5, 2.0, 0.3, -2.0, 1.5];

/// softmax(logits / temperature) in f64, computed here independently of the sampler.
fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let e: Vec<f64> = logits
        .iter()
        .map(|&x| (x as f64 / temperature).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Pearson's chi-square of `draws` samples against `expected` probabilities (zero-probability
/// tokens must never be drawn). With 5 degrees of freedom or fewer, the 0.1% critical value is
/// 20.5; the seed is fixed, so the test is deterministic.
fn chi_square(params: &SamplingParams, expected: &[f64], seed: u64) -> f64 {
    let draws = 100_000;
    let mut counts = vec![0usize; LOGITS.len()];
    let mut rng = Rng::new(seed);
    let full = softmax(&LOGITS, params.temperature as f64);
    for _ in 0..draws {
        let (tok, lp) = sample(&LOGITS, params, &mut rng);
        counts[tok as usize] += 1;
        assert!((lp as f64 - full[tok as usize].ln()).abs() < 1e-5);
    }
    let mut chi = 0.0;
    for (&c, &p) in counts.iter().zip(expected) {
        if p == 0.0 {
            assert_eq!(c, 0, "a filtered token was drawn");
        } else {
            let e = p * draws as f64;
            chi += (c as f64 - e).powi(2) / e;
        }
    }
    chi
}

fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        max_new_tokens: 1,
    }
}

#[test]
fn plain_and_tempered_frequencies_match_the_softmax() {
    for (t, seed) in [(1.0f32, 1u64), (0.7, 2), (2.0, 3)] {
        let p = softmax(&LOGITS, t as f64);
        let chi = chi_square(&params(t, 0, 1.0), &p, seed);
        assert!(chi < 20.5, "temperature {t}: chi-square {chi}");
    }
}

#[test]
fn top_k_keeps_the_k_most_likely_renormalised() {
    let p = softmax(&LOGITS, 1.0);
    // The three largest logits are at 2, 5, 0.
    let mut want = vec![0.0; 6];
    let kept = p[2] + p[5] + p[0];
    for i in [2, 5, 0] {
        want[i] = p[i] / kept;
    }
    let chi = chi_square(&params(1.0, 3, 1.0), &want, 4);
    assert!(chi < 20.5, "chi-square {chi}");
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    let p = softmax(&LOGITS, 1.0);
    // Sorted: 2 (0.443), 5 (0.269), 0 (0.163), 3 (0.081), 1 (0.036), 4 (0.008) (rounded).
    // p = 0.8 needs the first three (0.443 + 0.269 < 0.8 <= + 0.163).
    assert!(p[2] + p[5] < 0.8 && p[2] + p[5] + p[0] >= 0.8);
    let mut want = vec![0.0; 6];
    let kept = p[2] + p[5] + p[0];
    for i in [2, 5, 0] {
        want[i] = p[i] / kept;
    }
    let chi = chi_square(&params(1.0, 0, 0.8), &want, 5);
    assert!(chi < 20.5, "chi-square {chi}");
    // top-k 2 then top-p 0.5 of what is left: 0.443 / 0.712 = 0.62 >= 0.5, so only token 2.
    let mut rng = Rng::new(6);
    for _ in 0..1000 {
        assert_eq!(sample(&LOGITS, &params(1.0, 2, 0.5), &mut rng).0, 2);
    }
}

#[test]
fn greedy_takes_the_arg_max_and_same_seed_gives_same_draws() {
    let mut rng = Rng::new(7);
    let (tok, lp) = sample(&LOGITS, &SamplingParams::greedy(1), &mut rng);
    assert_eq!(tok, 2);
    assert!((lp as f64 - softmax(&LOGITS, 1.0)[2].ln()).abs() < 1e-6);
    let draw = |seed| {
        let mut r = Rng::new(seed);
        (0..50)
            .map(|_| sample(&LOGITS, &params(1.0, 0, 1.0), &mut r).0)
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(8), draw(8));
    assert_ne!(draw(8), draw(9));
}
