//! Launchers of `kernels/gelu.cu`, mirroring `cpu::ops::gelu`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{blocks, need, unary};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// out (n) = gelu_tanh(inp)
pub fn gelu_tanh_forward(g: &Gpu, out: &mut Buf, inp: &Buf, n: usize) -> Result<()> {
    unary(g, "gelu.cu", "gelu_tanh_forward", out, inp, n)
}

/// dinp (n) += dout * gelu_tanh'(inp)
pub fn gelu_tanh_backward(g: &Gpu, dinp: &mut Buf, inp: &Buf, dout: &Buf, n: usize) -> Result<()> {
    need(
        "gelu_tanh_backward",
        dinp.len().min(inp.len()).min(dout.len()),
        n,
    )?;
    let args = [dinp.into(), inp.into(), dout.into(), (n as i64).into()];
    g.launch("gelu.cu", "gelu_tanh_backward", blocks(n, 256), &args)
}

/// out (n) = gelu_erf(inp)
pub fn gelu_erf_forward(g: &Gpu, out: &mut Buf, inp: &Buf, n: usize) -> Result<()> {
    unary(g, "gelu.cu", "gelu_erf_forward", out, inp, n)
}
