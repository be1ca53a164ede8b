//! The optimiser on the device, mirroring `ppo::adamw`: the global gradient norm, clipping by it,
//! and AdamW with PyTorch's semantics, as three pieces (`grad_norm`, `clip_grad_norm`'s scaling,
//! `AdamW::step`) over lists of tensors. The norm and the clip coefficient stay on the device in a
//! two-float buffer, so clipping, or a step that applies the coefficient itself, never waits for
//! the host.

use crate::cuda::device::{DevBuf, Gpu, Grid};
use crate::cuda::ops::{blocks, int, need};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// Elements per piece of the norm's first pass (the kernel's NORM_PIECE; `ppo::adamw`'s CHUNK).
const NORM_PIECE: usize = 1 << 15;

/// norm_coef (2) = (global L2 norm of `grads`, the clip coefficient for `max_norm`: max_norm /
/// (norm + 1e-6) when below 1, else 1). Each tensor's pieces are summed in f64, then all pieces
/// in a fixed order. `partial` is scratch of at least `norm_pieces(grads)` values.
pub fn grad_norm(
    g: &Gpu,
    norm_coef: &mut Buf,
    partial: &mut DevBuf<f64>,
    grads: &[&Buf],
    max_norm: f32,
) -> Result<()> {
    need("grad_norm norm_coef", norm_coef.len(), 2)?;
    let pieces = norm_pieces(grads);
    need("grad_norm partial", partial.len(), pieces)?;
    let mut at = 0;
    for t in grads {
        let p = t.len().div_ceil(NORM_PIECE);
        if p == 0 {
            continue;
        }
        let args = [partial.at(at)?, (*t).into(), (t.len() as i64).into()];
        g.launch(
            "optim.cu",
            "grad_norm_squares",
            Grid::per_row(p, 256),
            &args,
        )?;
        at += p;
    }
    let args = [
        (&*norm_coef).into(),
        (&*partial).into(),
        int("pieces", pieces)?.into(),
        max_norm.into(),
    ];
    g.launch("optim.cu", "grad_norm_finish", Grid::per_row(1, 256), &args)
}

/// The pieces `grad_norm` sums for `grads`: the size of its scratch.
pub fn norm_pieces(grads: &[&Buf]) -> usize {
    grads.iter().map(|t| t.len().div_ceil(NORM_PIECE)).sum()
}

/// Scales every gradient by the clip coefficient of `norm_coef` (from `grad_norm`) when it is
/// below 1: `clip_grad_norm`'s second half.
pub fn grad_clip(g: &Gpu, grads: &mut [&mut Buf], norm_coef: &Buf) -> Result<()> {
    need("grad_clip norm_coef", norm_coef.len(), 2)?;
    for t in grads.iter_mut() {
        let n = t.len();
        let args = [(&**t).into(), (n as i64).into(), norm_coef.into()];
        g.launch("optim.cu", "grad_clip", blocks(n, 256), &args)?;
    }
    Ok(())
}

/// `ppo::adamw::clip_grad_norm` on the device: scales `grads` so that their global L2 norm is at
/// most `max_norm` and returns (norm, coefficient). The norm is read back, as the CPU's is
/// returned: a norm that is not finite is an error and leaves the gradients as they were.
pub fn clip_grad_norm(g: &Gpu, grads: &mut [&mut Buf], max_norm: f32) -> Result<(f32, f32)> {
    let mut norm_coef = g.alloc(2)?;
    let views: Vec<&Buf> = grads.iter().map(|t| &**t).collect();
    let mut partial = g.alloc(norm_pieces(&views).max(1))?;
    grad_norm(g, &mut norm_coef, &mut partial, &views, max_norm)?;
    let nc = g.download(&norm_coef)?;
    if !nc[0].is_finite() {
        bail!("the gradient norm is {}", nc[0]);
    }
    grad_clip(g, grads, &norm_coef)?;
    Ok((nc[0], nc[1]))
}

/// AdamW's state on the device over a fixed list of tensors, as `ppo::AdamW`.
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u64,
    pub m: Vec<Buf>,
    pub v: Vec<Buf>,
}

impl AdamW {
    /// The device copy of a host optimiser's state.
    pub fn upload(g: &Gpu, host: &crate::ppo::AdamW) -> Result<Self> {
        let up = |ts: &[crate::tensor::Tensor]| -> Result<Vec<Buf>> {
            ts.iter().map(|t| g.upload(&t.data)).collect()
        };
        Ok(AdamW {
            lr: host.lr,
            beta1: host.beta1,
            beta2: host.beta2,
            eps: host.eps,
            weight_decay: host.weight_decay,
            step: host.step,
            m: up(&host.m)?,
            v: up(&host.v)?,
        })
    }

    /// One step: decoupled decay, then Adam with bias correction. With `norm_coef` (from
    /// `grad_norm`), each gradient is scaled by its clip coefficient first, in place of a
    /// `grad_clip` pass.
    pub fn step(
        &mut self,
        g: &Gpu,
        params: &mut [&mut Buf],
        grads: &[&Buf],
        norm_coef: Option<&Buf>,
    ) -> Result<()> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            bail!(
                "AdamW holds {} tensors, was given {} parameters and {} gradients",
                self.m.len(),
                params.len(),
                grads.len()
            );
        }
        for (i, (p, gr)) in params.iter().zip(grads).enumerate() {
            if p.len() != self.m[i].len() || gr.len() != p.len() {
                bail!("AdamW: tensor {i} changed size");
            }
        }
        if let Some(nc) = norm_coef {
            need("AdamW norm_coef", nc.len(), 2)?;
        }
        self.step += 1;
        // The bias corrections in f64 on the host, as the CPU computes them.
        let t = self.step as i32;
        let bc1 = 1.0 - (self.beta1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (self.beta2 as f64).powi(t)).sqrt() as f32;
        let step_size = (self.lr as f64 / bc1) as f32;
        let decay = 1.0 - self.lr * self.weight_decay;
        for (i, (p, gr)) in params.iter_mut().zip(grads).enumerate() {
            let n = p.len();
            let args = [
                (&**p).into(),
                (&self.m[i]).into(),
                (&self.v[i]).into(),
                (*gr).into(),
                (n as i64).into(),
                self.beta1.into(),
                self.beta2.into(),
                self.eps.into(),
                decay.into(),
                step_size.into(),
                bc2_sqrt.into(),
                norm_coef.into(),
            ];
            g.launch("optim.cu", "adamw_step", blocks(n, 256), &args)?;
        }
        Ok(())
    }

    /// The moments on the host, as `ppo::AdamW` holds them (shapes from `like`).
    pub fn download(&self, g: &Gpu, like: &crate::ppo::AdamW) -> Result<crate::ppo::AdamW> {
        let mut out = like.clone();
        out.step = self.step;
        for (t, b) in out.m.iter_mut().zip(&self.m) {
            t.data = g.download(b)?;
        }
        for (t, b) in out.v.iter_mut().zip(&self.v) {
            t.data = g.download(b)?;
        }
        Ok(out)
    }
}
