//! Launchers of `kernels/residual.cu`, mirroring `cpu::ops::residual`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{binary, blocks, need};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// out (n) = a + b
pub fn residual_forward(g: &Gpu, out: &mut Buf, x: &Buf, y: &Buf, n: usize) -> Result<()> {
    binary(g, "residual.cu", "residual_forward", out, x, y, n)
}

/// da (n) += dout; db (n) += dout
pub fn residual_backward(g: &Gpu, da: &mut Buf, db: &mut Buf, dout: &Buf, n: usize) -> Result<()> {
    need(
        "residual_backward",
        da.len().min(db.len()).min(dout.len()),
        n,
    )?;
    let args = [da.into(), db.into(), dout.into(), (n as i64).into()];
    g.launch("residual.cu", "residual_backward", blocks(n, 256), &args)
}
