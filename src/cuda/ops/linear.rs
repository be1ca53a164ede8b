//! Launchers of the dense layer in the `torch.nn.Linear` layout (weight stored (out, in)),
//! mirroring `cpu::ops::linear`; its products run through `kernels/sgemm.cu`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::sgemm::{Layout, sgemm};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// out (N, OC) = inp (N, C) @ w^T + bias, w stored (OC, C): `cpu::ops::linear_forward` with an
/// optional bias
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    g: &Gpu,
    out: &mut Buf,
    inp: &Buf,
    w: &Buf,
    bias: Option<&Buf>,
    n: usize,
    c: usize,
    oc: usize,
) -> Result<()> {
    sgemm(g, Layout::NT, (n, oc, c), out, inp, w, bias, false)
}

/// dinp (N, I) += dout (N, O) @ w; dw (O, I) += dout^T @ inp, w stored (O, I)
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    g: &Gpu,
    dinp: Option<&mut Buf>,
    dw: &mut Buf,
    dout: &Buf,
    inp: &Buf,
    w: &Buf,
    n: usize,
    i: usize,
    o: usize,
) -> Result<()> {
    if let Some(dinp) = dinp {
        sgemm(g, Layout::NN, (n, i, o), dinp, dout, w, None, true)?;
    }
    sgemm(g, Layout::TN, (o, i, n), dw, dout, inp, None, true)
}
