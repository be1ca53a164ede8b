//! Launchers of `kernels/layernorm.cu`, mirroring `cpu::ops::layernorm`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{int, launch_columns, need, per_row};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// out (N, C) = layernorm(inp) * w + b; mean, rstd (N)
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    g: &Gpu,
    out: &mut Buf,
    mean: &mut Buf,
    rstd: &mut Buf,
    inp: &Buf,
    w: &Buf,
    b: &Buf,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    need("layernorm_forward out", out.len().min(inp.len()), n * c)?;
    need("layernorm_forward mean", mean.len().min(rstd.len()), n)?;
    let args = [
        out.into(),
        mean.into(),
        rstd.into(),
        inp.into(),
        w.into(),
        b.into(),
        int("N", n)?.into(),
        int("C", c)?.into(),
        eps.into(),
    ];
    g.launch("layernorm.cu", "layernorm_forward", per_row(n, 256), &args)
}

/// dinp (N, C) += ...; dw (C) += ...; db (C) += ... given dout (N, C) and the saved mean, rstd (N)
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    g: &Gpu,
    dinp: &mut Buf,
    dw: &mut Buf,
    db: &mut Buf,
    dout: &Buf,
    inp: &Buf,
    w: &Buf,
    mean: &Buf,
    rstd: &Buf,
    n: usize,
    c: usize,
) -> Result<()> {
    need(
        "layernorm_backward dinp",
        dinp.len().min(dout.len()).min(inp.len()),
        n * c,
    )?;
    need(
        "layernorm_backward params",
        dw.len().min(db.len()).min(w.len()),
        c,
    )?;
    need("layernorm_backward mean", mean.len().min(rstd.len()), n)?;
    let (ni, ci) = (int("N", n)?, int("C", c)?);
    let args = [
        dinp.into(),
        dout.into(),
        inp.into(),
        w.into(),
        mean.into(),
        rstd.into(),
        ni.into(),
        ci.into(),
    ];
    g.launch(
        "layernorm.cu",
        "layernorm_backward_dinp",
        per_row(n, 256),
        &args,
    )?;
    let args = [
        dw.into(),
        db.into(),
        dout.into(),
        inp.into(),
        mean.into(),
        rstd.into(),
        ni.into(),
        ci.into(),
    ];
    let entry = ("layernorm.cu", "layernorm_backward_params");
    launch_columns(g, entry, &args, n, c, 2)
}
