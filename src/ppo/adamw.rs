//! AdamW as PyTorch's `torch.optim.AdamW` steps it, and `clip_grad_norm` as
//! `torch.nn.utils.clip_grad_norm_`.

use crate::tensor::Tensor;
use anyhow::{Result, bail};
use rayon::prelude::*;

/// Elements per parallel piece: the step is elementwise and memory bound, so the pieces only need
/// to be large enough to amortise scheduling, and fixed so that sums add up in the same order on
/// any number of threads.
const CHUNK: usize = 1 << 15;

/// Optimiser state over a fixed list of tensors: first and second moments and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u64,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    /// Zero moments shaped like `params`.
    pub fn new(
        params: &[&Tensor],
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> Self {
        let zeros = || params.iter().map(|p| Tensor::zeros(&p.shape)).collect();
        AdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
            m: zeros(),
            v: zeros(),
        }
    }

    /// One step: decoupled decay `p -= lr wd p`, then Adam with bias correction.
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor]) -> Result<()> {
        self.step_scaled(params, grads, 1.0)
    }

    /// `step` on the gradients times `scale` (a clipping coefficient, `clip_coef`), without a
    /// pass that writes the scaled gradients first: the same arithmetic, one pass less over
    /// memory the size of the model.
    pub fn step_scaled(
        &mut self,
        params: &mut [&mut Tensor],
        grads: &[&Tensor],
        scale: f32,
    ) -> Result<()> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            bail!(
                "AdamW holds {} tensors, was given {} parameters and {} gradients",
                self.m.len(),
                params.len(),
                grads.len()
            );
        }
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            if p.data.len() != self.m[i].data.len() || g.data.len() != p.data.len() {
                bail!("AdamW: tensor {i} changed size");
            }
        }
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - (b1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (b2 as f64).powi(t)).sqrt();
        let step_size = (self.lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2_sqrt as f32;
        let decay = 1.0 - self.lr * self.weight_decay;
        let eps = self.eps;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            p.data
                .par_chunks_mut(CHUNK)
                .zip(self.m[i].data.par_chunks_mut(CHUNK))
                .zip(self.v[i].data.par_chunks_mut(CHUNK))
                .zip(g.data.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for j in 0..p.len() {
                        let gj = g[j] * scale;
                        p[j] *= decay;
                        m[j] = b1 * m[j] + (1.0 - b1) * gj;
                        v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                        let denom = v[j].sqrt() / bc2_sqrt + eps;
                        p[j] -= step_size * m[j] / denom;
                    }
                });
        }
        Ok(())
    }
}

/// The global L2 norm of `grads` (summed in f64, in pieces of fixed size); a non-finite norm
/// is an error.
pub fn grad_norm(grads: &[&Tensor]) -> Result<f32> {
    let mut sq = 0.0f64;
    for g in grads {
        let pieces: Vec<f64> = g.data.par_chunks(CHUNK).map(sum_of_squares).collect();
        sq += pieces.iter().sum::<f64>();
    }
    let norm = sq.sqrt() as f32;
    if !norm.is_finite() {
        bail!("the gradient norm is {norm}");
    }
    Ok(norm)
}

/// The sum of the squares of `xs` in f64, over eight running sums: one chain of dependent adds
/// held the whole norm to the latency of an add (a tenth of a second per step for SmolLM2). The
/// order is fixed, so the result does not depend on the machine's threads.
fn sum_of_squares(xs: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut groups = xs.chunks_exact(8);
    for g in &mut groups {
        for (lane, &x) in lanes.iter_mut().zip(g) {
            *lane += x as f64 * x as f64;
        }
    }
    let tail: f64 = groups
        .remainder()
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// What `clip_grad_norm` multiplies gradients of norm `norm` by: max_norm / (norm + 1e-6) when
/// that is below 1, else 1.
pub fn clip_coef(norm: f32, max_norm: f32) -> f32 {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 { coef } else { 1.0 }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (by max_norm / (norm + 1e-6)
/// when above) and returns the norm before clipping. A non-finite norm is an error and leaves the
/// gradients as they were.
pub fn clip_grad_norm(grads: &mut [&mut Tensor], max_norm: f32) -> Result<f32> {
    let norm = grad_norm(&grads.iter().map(|g| &**g).collect::<Vec<_>>())?;
    let coef = clip_coef(norm, max_norm);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            g.data.par_iter_mut().for_each(|x| *x *= coef);
        }
    }
    Ok(norm)
}
