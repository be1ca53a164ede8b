//! Launchers of `kernels/rope.cu`, mirroring `cpu::ops::rope`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{blocks, int, need, view};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// x (N, H, HS) rotated in place by pos (N) with the tables cos, sin (max_pos, HS/2) of
/// `model::llama::rope_table`; `offset`/`stride` locate the heads
#[allow(clippy::too_many_arguments)]
pub fn rope_forward(
    g: &Gpu,
    x: &mut Buf,
    offset: usize,
    stride: usize,
    pos: &DevBuf<i32>,
    cos: &Buf,
    sin: &Buf,
    n: usize,
    h: usize,
    hs: usize,
) -> Result<()> {
    need("rope_forward pos", pos.len(), n)?;
    let args = [
        view("rope_forward x", (&*x, offset, stride), n, h * hs)?,
        pos.into(),
        cos.into(),
        sin.into(),
        int("N", n)?.into(),
        int("H", h)?.into(),
        int("HS", hs)?.into(),
        (stride as i64).into(),
    ];
    g.launch(
        "rope.cu",
        "rope_forward",
        blocks(n * h * hs / 2, 256),
        &args,
    )
}

/// dinp (N, H*hd) += rotate back(dout (N, H*hd)) by pos (N) with the tables cos, sin (max_pos, hd/2)
#[allow(clippy::too_many_arguments)]
pub fn rope_backward(
    g: &Gpu,
    dinp: &mut Buf,
    dout: &Buf,
    pos: &DevBuf<i32>,
    cos: &Buf,
    sin: &Buf,
    n: usize,
    h: usize,
    hs: usize,
) -> Result<()> {
    need("rope_backward", dinp.len().min(dout.len()), n * h * hs)?;
    need("rope_backward pos", pos.len(), n)?;
    let args = [
        dinp.into(),
        dout.into(),
        pos.into(),
        cos.into(),
        sin.into(),
        int("N", n)?.into(),
        int("H", h)?.into(),
        int("HS", hs)?.into(),
    ];
    g.launch(
        "rope.cu",
        "rope_backward",
        blocks(n * h * hs / 2, 256),
        &args,
    )
}
