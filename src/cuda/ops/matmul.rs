//! Launchers of the Conv1D layer, mirroring `cpu::ops::matmul`: its products through
//! `kernels/sgemm.cu` and its bias gradient through `kernels/matmul.cu`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::sgemm::{Layout, sgemm};
use crate::cuda::ops::{int, launch_columns, need};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// out (N, OC) = inp (N, C) @ w (C, OC) + bias
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    g: &Gpu,
    out: &mut Buf,
    inp: &Buf,
    w: &Buf,
    bias: Option<&Buf>,
    n: usize,
    c: usize,
    oc: usize,
) -> Result<()> {
    sgemm(g, Layout::NN, (n, oc, c), out, inp, w, bias, false)
}

/// dinp (N, C) += dout (N, OC) @ w^T; dw (C, OC) += inp^T @ dout; db (OC) += sum_rows dout
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    g: &Gpu,
    dinp: Option<&mut Buf>,
    dw: &mut Buf,
    db: Option<&mut Buf>,
    dout: &Buf,
    inp: &Buf,
    w: &Buf,
    n: usize,
    c: usize,
    oc: usize,
) -> Result<()> {
    if let Some(dinp) = dinp {
        sgemm(g, Layout::NT, (n, c, oc), dinp, dout, w, None, true)?;
    }
    sgemm(g, Layout::TN, (c, oc, n), dw, inp, dout, None, true)?;
    if let Some(db) = db {
        need("matmul_backward db", db.len(), oc)?;
        need("matmul_backward dout", dout.len(), n * oc)?;
        let args = [
            db.into(),
            dout.into(),
            int("N", n)?.into(),
            int("OC", oc)?.into(),
        ];
        launch_columns(g, ("matmul.cu", "matmul_backward_dbias"), &args, n, oc, 1)?;
    }
    Ok(())
}
