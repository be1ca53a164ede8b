//! Launchers of `kernels/swiglu.cu`, mirroring `cpu::ops::swiglu`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{binary, blocks, need};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// out (n) = silu(gate) * up
pub fn swiglu_forward(g: &Gpu, out: &mut Buf, gate: &Buf, up: &Buf, n: usize) -> Result<()> {
    binary(g, "swiglu.cu", "swiglu_forward", out, gate, up, n)
}

/// dgate (n) += dout * up * silu'(gate); dup (n) += dout * silu(gate)
pub fn swiglu_backward(
    g: &Gpu,
    dgate: &mut Buf,
    dup: &mut Buf,
    dout: &Buf,
    gate: &Buf,
    up: &Buf,
    n: usize,
) -> Result<()> {
    need(
        "swiglu_backward",
        dgate
            .len()
            .min(dup.len())
            .min(dout.len())
            .min(gate.len())
            .min(up.len()),
        n,
    )?;
    let args = [
        dgate.into(),
        dup.into(),
        dout.into(),
        gate.into(),
        up.into(),
        (n as i64).into(),
    ];
    g.launch("swiglu.cu", "swiglu_backward", blocks(n, 256), &args)
}
