//! Launchers of `kernels/rmsnorm.cu`, mirroring `cpu::ops::rmsnorm`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{int, launch_columns, need, per_row};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// out (N, C) = inp / rms(inp) * w; rrms (N)
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward(
    g: &Gpu,
    out: &mut Buf,
    rrms: &mut Buf,
    inp: &Buf,
    w: &Buf,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    need("rmsnorm_forward out", out.len().min(inp.len()), n * c)?;
    need("rmsnorm_forward rrms", rrms.len(), n)?;
    let args = [
        out.into(),
        rrms.into(),
        inp.into(),
        w.into(),
        int("N", n)?.into(),
        int("C", c)?.into(),
        eps.into(),
    ];
    g.launch("rmsnorm.cu", "rmsnorm_forward", per_row(n, 256), &args)
}

/// dinp (N, C) += ...; dw (C) += sum_rows dout * inp * rstd, given dout (N, C) and the saved rstd (N)
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    g: &Gpu,
    dinp: &mut Buf,
    dw: &mut Buf,
    dout: &Buf,
    inp: &Buf,
    w: &Buf,
    rstd: &Buf,
    n: usize,
    c: usize,
) -> Result<()> {
    need(
        "rmsnorm_backward dinp",
        dinp.len().min(dout.len()).min(inp.len()),
        n * c,
    )?;
    need("rmsnorm_backward dw", dw.len().min(w.len()), c)?;
    need("rmsnorm_backward rstd", rstd.len(), n)?;
    let (ni, ci) = (int("N", n)?, int("C", c)?);
    let args = [
        dinp.into(),
        dout.into(),
        inp.into(),
        w.into(),
        rstd.into(),
        ni.into(),
        ci.into(),
    ];
    g.launch(
        "rmsnorm.cu",
        "rmsnorm_backward_dinp",
        per_row(n, 256),
        &args,
    )?;
    let args = [
        dw.into(),
        dout.into(),
        inp.into(),
        rstd.into(),
        ni.into(),
        ci.into(),
    ];
    launch_columns(
        g,
        ("rmsnorm.cu", "rmsnorm_backward_dweight"),
        &args,
        n,
        c,
        1,
    )
}
