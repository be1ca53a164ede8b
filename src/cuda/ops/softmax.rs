//! Launchers of `kernels/softmax.cu`, mirroring `cpu::ops::softmax`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{int, need, per_row};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// lp (P) = log_softmax(logits * inv_temp)[targets]; logits (P, V)
pub fn log_softmax_gather_forward(
    g: &Gpu,
    lp: &mut Buf,
    logits: &Buf,
    targets: &DevBuf<u32>,
    p: usize,
    v: usize,
    inv_temp: f32,
) -> Result<()> {
    need("log_softmax_gather_forward logits", logits.len(), p * v)?;
    need(
        "log_softmax_gather_forward lp",
        lp.len().min(targets.len()),
        p,
    )?;
    let args = [
        lp.into(),
        logits.into(),
        targets.into(),
        int("P", p)?.into(),
        int("V", v)?.into(),
        inv_temp.into(),
    ];
    g.launch(
        "softmax.cu",
        "log_softmax_gather_forward",
        per_row(p, 256),
        &args,
    )
}

/// ent (P) = entropy of softmax(logits) per row
pub fn entropy_forward(g: &Gpu, ent: &mut Buf, logits: &Buf, p: usize, v: usize) -> Result<()> {
    need("entropy_forward logits", logits.len(), p * v)?;
    need("entropy_forward ent", ent.len(), p)?;
    let args = [
        ent.into(),
        logits.into(),
        int("P", p)?.into(),
        int("V", v)?.into(),
    ];
    g.launch("softmax.cu", "entropy_forward", per_row(p, 256), &args)
}
