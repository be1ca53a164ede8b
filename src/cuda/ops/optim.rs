//! The optimiser on the device, mirroring `ppo::adamw`: the global gradient norm, clipping by it,
//! and AdamW with PyTorch's semantics, as three pieces (`grad_norm`, `clip_grad_norm`'s scaling,
//! `AdamW::step`) over lists of tensors. The norm and the clip coefficient stay on the device in a
//! two-float buffer, so clipping, or a step that applies the coefficient itself, never waits for
//! the host. The norm's first pass and the step each launch once for all of a model's tensors,
//! through a `TensorList` of their addresses, kept while the addresses hold.

use crate::cuda::device::{Arg, DevBuf, Gpu, Grid};
use crate::cuda::ops::{blocks, int, need};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// Elements per piece of the norm's first pass (the kernel's NORM_PIECE; `ppo::adamw`'s CHUNK).
const NORM_PIECE: usize = 1 << 15;

/// Tensors as one launch of `kernels/optim.cu` reads them: a row of addresses per tensor, each
/// tensor's length, and the first block of each (T + 1 offsets) for `per_block` elements a block.
pub struct TensorList {
    /// What the list was made from: every address, and the lengths.
    addrs: Vec<u64>,
    lens_host: Vec<usize>,
    ptrs: DevBuf<u64>,
    lens: DevBuf<i64>,
    first: DevBuf<i32>,
    tensors: usize,
    blocks: usize,
}

impl TensorList {
    /// `slot`'s list for tensors of `lens` whose addresses are `addrs` (a row per tensor), made
    /// anew unless it is already that list.
    fn kept<'a>(
        slot: &'a mut Option<TensorList>,
        g: &Gpu,
        addrs: Vec<u64>,
        lens: &[usize],
        per_block: usize,
    ) -> Result<&'a TensorList> {
        let same = slot
            .as_ref()
            .is_some_and(|l| l.addrs == addrs && l.lens_host == lens);
        if !same {
            let mut first = Vec::with_capacity(lens.len() + 1);
            let mut at = 0usize;
            for &n in lens {
                first.push(int("first block", at)?);
                at += n.div_ceil(per_block);
            }
            first.push(int("blocks", at)?);
            let lens_i: Vec<i64> = lens.iter().map(|&n| n as i64).collect();
            *slot = Some(TensorList {
                ptrs: g.upload(&addrs)?,
                lens: g.upload(&lens_i)?,
                first: g.upload(&first)?,
                tensors: lens.len(),
                blocks: at,
                addrs,
                lens_host: lens.to_vec(),
            });
        }
        Ok(slot.as_ref().expect("made above"))
    }

    /// Launches `entry` of `kernels/optim.cu` over the list, a block of 256 threads per block of
    /// it: its arguments `before` the list's four, then `after` them. Nothing for an empty list.
    fn launch(&self, g: &Gpu, entry: &str, before: &[Arg], after: &[Arg]) -> Result<()> {
        if self.blocks == 0 {
            return Ok(());
        }
        let list = [
            (&self.ptrs).into(),
            (&self.lens).into(),
            (&self.first).into(),
            int("tensors", self.tensors)?.into(),
        ];
        let args: Vec<Arg> = [before, &list, after].concat();
        g.launch("optim.cu", entry, Grid::per_row(self.blocks, 256), &args)
    }
}

/// norm_coef (2) = (global L2 norm of `grads`, the clip coefficient for `max_norm`: max_norm /
/// (norm + 1e-6) when below 1, else 1). Each tensor's pieces are summed in f64, then all pieces
/// in a fixed order. `partial` is scratch of at least `norm_pieces(grads)` values; `list` keeps
/// the tensors' list between calls.
pub fn grad_norm(
    g: &Gpu,
    norm_coef: &mut Buf,
    partial: &mut DevBuf<f64>,
    grads: &[&Buf],
    max_norm: f32,
    list: &mut Option<TensorList>,
) -> Result<()> {
    need("grad_norm norm_coef", norm_coef.len(), 2)?;
    let pieces = norm_pieces(grads);
    need("grad_norm partial", partial.len(), pieces)?;
    let addrs = grads.iter().map(|t| t.address()).collect();
    let lens: Vec<usize> = grads.iter().map(|t| t.len()).collect();
    let l = TensorList::kept(list, g, addrs, &lens, NORM_PIECE)?;
    l.launch(g, "grad_norm_squares", &[(&*partial).into()], &[])?;
    let args = [
        (&*norm_coef).into(),
        (&*partial).into(),
        int("pieces", pieces)?.into(),
        max_norm.into(),
    ];
    g.launch("optim.cu", "grad_norm_finish", Grid::per_row(1, 256), &args)
}

/// Sets every tensor of `grads` to zero in one launch; `list` keeps their list between calls.
pub fn grad_zero(g: &Gpu, grads: &mut [&mut Buf], list: &mut Option<TensorList>) -> Result<()> {
    let addrs = grads.iter().map(|t| t.address()).collect();
    let lens: Vec<usize> = grads.iter().map(|t| t.len()).collect();
    TensorList::kept(list, g, addrs, &lens, 256)?.launch(g, "grad_zero", &[], &[])
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

/// A gradient norm's buffers, kept between calls: the norm and clip coefficient (2), the
/// pieces' scratch and the tensors' list, so that a norm over the same tensors allocates nothing.
#[derive(Default)]
pub struct NormBufs {
    norm_coef: Option<Buf>,
    partial: Option<DevBuf<f64>>,
    list: Option<TensorList>,
}

impl NormBufs {
    /// `grad_norm` of `grads` into the kept buffers: the (norm, coefficient) buffer.
    pub fn norm(&mut self, g: &Gpu, grads: &[&Buf], max_norm: f32) -> Result<&Buf> {
        let pieces = norm_pieces(grads).max(1);
        if self.partial.as_ref().is_none_or(|p| p.len() < pieces) {
            self.partial = Some(g.alloc(pieces)?);
        }
        if self.norm_coef.is_none() {
            self.norm_coef = Some(g.alloc(2)?);
        }
        let (nc, partial) = (self.norm_coef.as_mut(), self.partial.as_mut());
        let (nc, partial) = nc.zip(partial).expect("made above");
        grad_norm(g, nc, partial, grads, max_norm, &mut self.list)?;
        Ok(nc)
    }

    /// The last `norm`'s (norm, coefficient) buffer.
    pub fn norm_coef(&self) -> Option<&Buf> {
        self.norm_coef.as_ref()
    }
}

/// `ppo::adamw::clip_grad_norm` on the device: scales `grads` so that their global L2 norm is at
/// most `max_norm` and returns (norm, coefficient). The norm is read back, as the CPU's is
/// returned: a norm that is not finite is an error and leaves the gradients as they were.
/// `bufs` keeps the norm's buffers between calls.
pub fn clip_grad_norm(
    g: &Gpu,
    grads: &mut [&mut Buf],
    max_norm: f32,
    bufs: &mut NormBufs,
) -> Result<(f32, f32)> {
    let views: Vec<&Buf> = grads.iter().map(|t| &**t).collect();
    let norm_coef = bufs.norm(g, &views, max_norm)?;
    let nc = g.download(norm_coef)?;
    if !nc[0].is_finite() {
        bail!("the gradient norm is {}", nc[0]);
    }
    grad_clip(g, grads, norm_coef)?;
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
    /// The parameters', moments' and gradients' list of the last step.
    list: Option<TensorList>,
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
            list: None,
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
        let mut addrs = Vec::with_capacity(4 * params.len());
        for (i, (p, gr)) in params.iter().zip(grads).enumerate() {
            let (m, v) = (&self.m[i], &self.v[i]);
            addrs.extend([p.address(), m.address(), v.address(), gr.address()]);
        }
        let lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let after = [
            self.beta1.into(),
            self.beta2.into(),
            self.eps.into(),
            decay.into(),
            step_size.into(),
            bc2_sqrt.into(),
            norm_coef.into(),
        ];
        TensorList::kept(&mut self.list, g, addrs, &lens, 256)?.launch(g, "adamw_step", &[], &after)
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
