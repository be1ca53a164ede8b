//! Choosing the next token from a row of logits, and what sampling gives back; independent of
//! the backend.

use crate::rng::Rng;
use anyhow::Result;
use rayon::prelude::*;

/// One sampled continuation: its tokens (ending with end-of-text if it stopped there) and each
/// token's log-probability under softmax(logits / temperature), before top-k/top-p filtering.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
}

/// How tokens are drawn. `temperature == 0` is greedy decoding; `top_k == 0` and `top_p >= 1`
/// switch those filters off.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub max_new_tokens: usize,
}

impl Default for SamplingParams {
    /// The paper's child sampling: temperature 1, no top-k or top-p.
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 16,
        }
    }
}

impl SamplingParams {
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens,
        }
    }
}

/// The devices' counter-based draw (`counter_uniform` in `kernels/sampling.cu`): a uniform in
/// [0, 1) with 24 bits that depends on (seed, row, step) alone, so a decoding loop needs no
/// generator state. Splitmix64's finaliser, applied twice.
pub fn keyed_uniform(seed: u64, row: u32, step: u32) -> f32 {
    fn mix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let h = mix64(seed ^ mix64(((row as u64) << 32) | step as u64));
    (h >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// log softmax(logits / temperature)[i] for every i, in f64.
fn log_probs(logits: &[f32], temperature: f64) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let scaled: Vec<f64> = logits
        .iter()
        .map(|&x| (x as f64 - max) / temperature)
        .collect();
    let lse = scaled.iter().map(|x| x.exp()).sum::<f64>().ln();
    scaled.into_iter().map(|x| x - lse).collect()
}

/// Draws one token from `logits` (V). Returns the token and its log-probability under
/// softmax(logits / temperature), taken BEFORE top-k/top-p filtering: that is the policy's own
/// probability, which a policy-gradient update compares against. Greedy decoding
/// (temperature 0) returns the arg-max and its log-probability under softmax(logits).
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> (u32, f32) {
    if params.temperature <= 0.0 {
        return sample_with_uniform(logits, params, 0.0);
    }
    sample_with_uniform(logits, params, rng.uniform())
}

/// `sample` with its uniform draw `u` in [0, 1) given: the inverse CDF of the kept tokens, walked
/// in token-id order. The CUDA sampler takes the same `u` and walks the same order, so the two pick
/// the same token unless rounding puts `u` on a boundary.
pub fn sample_with_uniform(logits: &[f32], params: &SamplingParams, u: f64) -> (u32, f32) {
    assert!(!logits.is_empty(), "sample: empty logits");
    if params.temperature <= 0.0 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        let lp = log_probs(logits, 1.0);
        return (best as u32, lp[best] as f32);
    }
    let lp = log_probs(logits, params.temperature as f64);
    let v = lp.len();
    let filtering = (params.top_k > 0 && params.top_k < v) || params.top_p < 1.0;
    // The candidates and their unnormalised weights.
    let mut cand: Vec<(usize, f64)> = if filtering {
        let mut order: Vec<(usize, f64)> = lp.iter().map(|&l| l.exp()).enumerate().collect();
        // Highest probability first; ties by lower index so the order is deterministic.
        let by_prob = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if params.top_k > 0 && params.top_k < v {
            order.select_nth_unstable_by(params.top_k - 1, by_prob);
            order.truncate(params.top_k);
        }
        order.sort_unstable_by(by_prob);
        if params.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p of what is left after top-k
            // (the same order of filters as Hugging Face: temperature, top-k, top-p).
            let total: f64 = order.iter().map(|x| x.1).sum();
            let mut acc = 0.0;
            let mut keep = order.len();
            for (i, x) in order.iter().enumerate() {
                acc += x.1;
                if acc >= params.top_p as f64 * total {
                    keep = i + 1;
                    break;
                }
            }
            order.truncate(keep.max(1));
        }
        order
    } else {
        lp.iter().map(|&l| l.exp()).enumerate().collect()
    };
    cand.sort_unstable_by_key(|x| x.0);
    let total: f64 = cand.iter().map(|x| x.1).sum();
    let mut u = u * total;
    let mut pick = cand.last().map(|x| x.0).unwrap_or(0);
    for &(i, p) in &cand {
        if u < p {
            pick = i;
            break;
        }
        u -= p;
    }
    cand.clear();
    (pick as u32, lp[pick] as f32)
}

/// One sampling step of a batch: each row not yet `done` samples from its logits (B, V), and the
/// token and its log-probability are appended to its generation; a row that samples `eos` is
/// done. Returns the tokens to feed next (`eos` for done rows). The rows' uniform draws are taken
/// from `rng` in row order, as `sample` would take them one row after another; the rows then
/// sample in parallel, so the tokens are the same on any number of threads.
pub fn sample_step(
    logits: &[f32],
    v: usize,
    out: &mut [Generation],
    done: &mut [bool],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Vec<u32> {
    let draws: Vec<(usize, f64)> = (0..out.len())
        .filter(|&r| !done[r])
        .map(|r| {
            let u = if params.temperature <= 0.0 {
                0.0
            } else {
                rng.uniform()
            };
            (r, u)
        })
        .collect();
    let picked: Vec<(u32, f32)> = draws
        .par_iter()
        .map(|&(r, u)| sample_with_uniform(&logits[r * v..(r + 1) * v], params, u))
        .collect();
    let mut next = vec![eos; out.len()];
    for (&(r, _), &(tok, lp)) in draws.iter().zip(&picked) {
        let g = &mut out[r];
        g.tokens.push(tok);
        g.logprobs.push(lp);
        next[r] = tok;
        done[r] = tok == eos;
    }
    next
}

/// Sampling continuations of prompts, all together: what the trainer's policy does for its
/// rollouts (`ppo::PolicyBackend` is one) and what a local parent does for its answers. A backend
/// implements it; the end-of-text token is the generator's own.
pub trait Generator {
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
    ) -> Result<Vec<Generation>>;
}
