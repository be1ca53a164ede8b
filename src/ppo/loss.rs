//! The losses of docs/METHOD.md's policy update on the scored response tokens, and their gradients.
//!
//! Every mean is over the M scored tokens of a (mini)batch: the response tokens the mask keeps.
//! The gradient of the actor loss with respect to the logits is written by hand:
//! d logp(a) / d z = onehot(a) - softmax(z), and the entropy H = lse(z) - sum p z has
//! dH / dz_k = -p_k (z_k - sum_j p_j z_j).

use crate::ppo::config::PpoConfig;
use crate::rng::Rng;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// One rollout: the prompt's token ids, the sampled response (ending with end-of-text when the
/// child stopped), each response token's log-probability at sampling time, and the reward.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub reward: f32,
}

/// The number of response tokens the mask keeps: those before the first end-of-text, plus the
/// end-of-text itself with `train_eos`.
pub fn kept_tokens(response: &[u32], eos: u32, train_eos: bool) -> usize {
    match response.iter().position(|&t| t == eos) {
        Some(i) if train_eos => i + 1,
        Some(i) => i,
        None => response.len(),
    }
}

/// The value head: a linear map hidden -> 1 with a bias, on a detached hidden state.
#[derive(Clone, Debug, PartialEq)]
pub struct Critic {
    pub w: Tensor, // (C)
    pub b: Tensor, // (1)
}

impl Critic {
    /// PyTorch's `nn.Linear(hidden, 1)` init: weight and bias uniform in +-1/sqrt(hidden).
    pub fn new(hidden: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let bound = 1.0 / (hidden as f64).sqrt();
        let mut draw = || ((2.0 * rng.uniform() - 1.0) * bound) as f32;
        let w: Vec<f32> = (0..hidden).map(|_| draw()).collect();
        let b = vec![draw()];
        Critic {
            w: Tensor::from_vec(&[hidden], w),
            b: Tensor::from_vec(&[1], b),
        }
    }

    pub fn hidden(&self) -> usize {
        self.w.numel()
    }

    /// V = w . h + b for one hidden state (C).
    pub fn value(&self, h: &[f32]) -> f32 {
        let mut s = self.b.data[0] as f64;
        for (a, b) in self.w.data.iter().zip(h) {
            s += *a as f64 * *b as f64;
        }
        s as f32
    }
}

/// The per-token inputs of the actor loss; M scored tokens.
pub struct ActorInputs<'a> {
    /// (M, V) actor logits at the positions that predict the scored tokens.
    pub logits: &'a [f32],
    pub vocab: usize,
    /// (M) the sampled tokens.
    pub tokens: &'a [u32],
    /// (M) their log-probabilities at sampling time (the ratio's denominator).
    pub old_logprobs: &'a [f32],
    /// (M) their log-probabilities under the frozen reference model.
    pub ref_logprobs: &'a [f32],
    /// (M) the advantage of each token's sequence.
    pub advantages: &'a [f32],
}

/// The actor's losses (means over the scored tokens) and dloss/dlogits (M, V).
#[derive(Clone, Debug, Default)]
pub struct ActorLoss {
    pub policy: f32,
    pub entropy: f32,
    pub kl: f32,
    pub actor: f32,
    pub approx_kl: f32,
    pub clip_fraction: f32,
    /// (M) the actor's log-probabilities of the sampled tokens.
    pub logprobs: Vec<f32>,
    pub dlogits: Vec<f32>,
}

/// Policy loss, entropy, KL and their combination `policy - entropy_coef H + kl_coef KL`, with
/// its gradient. Without `clip_range` the policy loss is the reference's -mean(logp A); with it,
/// -mean(min(ratio A, clamp(ratio, 1 - c, 1 + c) A)), ratio = exp(logp - old logp).
pub fn actor_loss(inp: &ActorInputs, cfg: &PpoConfig, kl_coef: f32) -> ActorLoss {
    let (v, m) = (inp.vocab, inp.tokens.len());
    assert_eq!(inp.logits.len(), m * v, "logits must be (M, V)");
    assert_eq!(inp.old_logprobs.len(), m);
    assert_eq!(inp.ref_logprobs.len(), m);
    assert_eq!(inp.advantages.len(), m);
    let mut out = ActorLoss {
        dlogits: vec![0.0; m * v],
        logprobs: vec![0.0; m],
        ..Default::default()
    };
    if m == 0 {
        return out;
    }
    let inv_m = 1.0 / m as f64;
    // Rows in parallel, each writing its own dlogits row; their terms are summed below in row
    // order, so the result does not depend on the thread count.
    let rows: Vec<RowTerms> = out
        .dlogits
        .par_chunks_mut(v)
        .enumerate()
        .map_init(
            || vec![0.0f64; v],
            |probs, (i, d)| actor_row(inp, cfg, kl_coef, inv_m, i, probs, d),
        )
        .collect();
    let (mut pol, mut ent, mut kl, mut akl, mut clipped) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for (i, r) in rows.iter().enumerate() {
        out.logprobs[i] = r.logp as f32;
        pol += r.policy;
        ent += r.entropy;
        kl += r.kl;
        akl += r.approx_kl;
        clipped += r.clipped;
    }
    out.policy = (pol * inv_m) as f32;
    out.entropy = (ent * inv_m) as f32;
    out.kl = (kl * inv_m) as f32;
    out.approx_kl = (akl * inv_m) as f32;
    out.clip_fraction = (clipped * inv_m) as f32;
    out.actor =
        (pol * inv_m - cfg.entropy_coef as f64 * ent * inv_m + kl_coef as f64 * kl * inv_m) as f32;
    out
}

/// The critic's loss 0.5 MSE(V, r) (and the plain MSE, logged as the value loss) and dloss/dV.
/// With `value_clip`, the larger of the squared errors of V and of old V + clamp(V - old V, +-c),
/// as PPO clips values.
pub fn critic_loss(
    values: &[f32],
    old_values: &[f32],
    returns: &[f32],
    value_clip: Option<f32>,
) -> (f32, f32, Vec<f32>) {
    let n = values.len();
    assert_eq!(old_values.len(), n);
    assert_eq!(returns.len(), n);
    if n == 0 {
        return (0.0, 0.0, Vec::new());
    }
    let mut mse = 0.0f64;
    let mut dv = vec![0.0f32; n];
    for i in 0..n {
        let (v, r) = (values[i] as f64, returns[i] as f64);
        let e = v - r;
        let (sq, de) = match value_clip {
            None => (e * e, e),
            Some(c) => {
                let old = old_values[i] as f64;
                let vc = old + (v - old).clamp(-(c as f64), c as f64);
                let ec = vc - r;
                if ec * ec > e * e {
                    let inside = (v - old).abs() < c as f64;
                    (ec * ec, if inside { ec } else { 0.0 })
                } else {
                    (e * e, e)
                }
            }
        };
        mse += sq;
        // d(0.5 mean(sq))/dV = de / n
        dv[i] = (de / n as f64) as f32;
    }
    let mse = mse / n as f64;
    (mse as f32, (0.5 * mse) as f32, dv)
}

/// Advantages normalised to mean 0 and standard deviation 1 (unbiased, as TRL whitens), in place.
pub fn whiten(adv: &mut [f32]) {
    let n = adv.len();
    if n < 2 {
        return;
    }
    let mean = adv.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let var = adv.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let rstd = 1.0 / (var + 1e-8).sqrt();
    for x in adv.iter_mut() {
        *x = ((*x as f64 - mean) * rstd) as f32;
    }
}

/// What one policy update reports; averages over its optimiser steps.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpdateLosses {
    pub policy_loss: f32,
    pub value_loss: f32,
    pub entropy: f32,
    pub kl: f32,
    pub kl_coef: f32,
    pub actor_loss: f32,
    pub critic_loss: f32,
    pub approx_kl: f32,
    pub clip_fraction: f32,
    /// Gradient norms before clipping.
    pub actor_grad_norm: f32,
    pub critic_grad_norm: f32,
    /// Mean value estimate before the update.
    pub value_mean: f32,
    /// Response tokens scored.
    pub tokens: usize,
}

/// One row's terms of the actor loss (before the 1/M of the mean), and its dlogits row `d`.
struct RowTerms {
    logp: f64,
    policy: f64,
    entropy: f64,
    kl: f64,
    approx_kl: f64,
    clipped: f64,
}

/// Row i of `actor_loss`: its terms, with its gradient written into `d` (V); `probs` is scratch.
fn actor_row(
    inp: &ActorInputs,
    cfg: &PpoConfig,
    kl_coef: f32,
    inv_m: f64,
    i: usize,
    probs: &mut [f64],
    d: &mut [f32],
) -> RowTerms {
    let v = inp.vocab;
    let z = &inp.logits[i * v..(i + 1) * v];
    let a = inp.tokens[i] as usize;
    let max = z.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y)) as f64;
    let mut sum = 0.0f64;
    for (p, &zk) in probs.iter_mut().zip(z) {
        *p = (zk as f64 - max).exp();
        sum += *p;
    }
    let lse = max + sum.ln();
    let mut ez = 0.0f64; // E_p[z]
    for (p, &zk) in probs.iter_mut().zip(z) {
        *p /= sum;
        ez += *p * zk as f64;
    }
    let h = lse - ez;
    let logp = z[a] as f64 - lse;
    let adv = inp.advantages[i] as f64;
    let log_ratio = logp - inp.old_logprobs[i] as f64;
    let ratio = log_ratio.exp();
    let approx_kl = (ratio - 1.0) - log_ratio;
    // d(policy term)/d logp for this token, before the 1/M of the mean.
    let (mut policy, mut clipped) = (0.0f64, 0.0f64);
    let dpol = match cfg.clip_range {
        None => {
            policy -= logp * adv;
            -adv
        }
        Some(c) => {
            let c = c as f64;
            let unclipped = ratio * adv;
            let clamped = ratio.clamp(1.0 - c, 1.0 + c) * adv;
            if (ratio - 1.0).abs() > c {
                clipped = 1.0;
            }
            if unclipped <= clamped {
                policy -= unclipped;
                -ratio * adv
            } else {
                // The clamped branch is constant in logp once the ratio is outside the range.
                policy -= clamped;
                if ratio > 1.0 - c && ratio < 1.0 + c {
                    -ratio * adv
                } else {
                    0.0
                }
            }
        }
    };
    let g = (dpol + kl_coef as f64) * inv_m;
    let ge = cfg.entropy_coef as f64 * inv_m;
    for k in 0..v {
        let p = probs[k];
        // -entropy_coef dH/dz_k = entropy_coef p_k (z_k - E[z])
        d[k] = (-g * p + ge * p * (z[k] as f64 - ez)) as f32;
    }
    d[a] += g as f32;
    RowTerms {
        logp,
        policy,
        entropy: h,
        kl: logp - inp.ref_logprobs[i] as f64,
        approx_kl,
        clipped,
    }
}
