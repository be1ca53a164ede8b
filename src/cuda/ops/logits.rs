//! Launchers of the language-model head, mirroring `cpu::ops::logits`: the row gather of
//! `kernels/logits.cu`, the product through `linear`, and the scatter back onto the chosen rows.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{
    RowBuckets, blocks, int, linear_backward, linear_forward, need, scatter_add_rows,
};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// out (M, C) = inp[rows]: the gather half of `logits_forward`
pub fn logits_forward_rows(
    g: &Gpu,
    out: &mut Buf,
    inp: &Buf,
    rows: &DevBuf<i32>,
    m: usize,
    c: usize,
) -> Result<()> {
    need("gather_rows out", out.len(), m * c)?;
    move_rows(g, "gather_rows", out, inp, rows, m, c)
}

/// out[rows] = inp (M, C): the rows of a decoding step into a larger layout (rows distinct)
pub fn scatter_rows(
    g: &Gpu,
    out: &mut Buf,
    inp: &Buf,
    rows: &DevBuf<i32>,
    m: usize,
    c: usize,
) -> Result<()> {
    need("scatter_rows inp", inp.len(), m * c)?;
    move_rows(g, "scatter_rows", out, inp, rows, m, c)
}

/// `gather_rows` or `scatter_rows` of `m` rows of width `c` by `rows` (M).
fn move_rows(
    g: &Gpu,
    entry: &str,
    out: &mut Buf,
    inp: &Buf,
    rows: &DevBuf<i32>,
    m: usize,
    c: usize,
) -> Result<()> {
    need(&format!("{entry} rows"), rows.len(), m)?;
    let args = [
        out.into(),
        inp.into(),
        rows.into(),
        int("M", m)?.into(),
        int("C", c)?.into(),
    ];
    g.launch("logits.cu", entry, blocks(m * c, 256), &args)
}

/// out (M, V) = inp[rows] (M, C) @ wte^T; gathered (M, C) receives inp[rows]
#[allow(clippy::too_many_arguments)]
pub fn logits_forward(
    g: &Gpu,
    out: &mut Buf,
    gathered: &mut Buf,
    inp: &Buf,
    rows: &DevBuf<i32>,
    wte: &Buf,
    m: usize,
    v: usize,
    c: usize,
) -> Result<()> {
    logits_forward_rows(g, gathered, inp, rows, m, c)?;
    linear_forward(g, out, gathered, wte, None, m, c, v)
}

/// dinp[map] (N, W) += dout (M, W): each row of dout adds onto its row of dinp (`cpu::shared`'s
/// gather backward; the logits' scatter onto the chosen rows)
pub fn gather_rows_backward(
    g: &Gpu,
    dinp: &mut Buf,
    dout: &Buf,
    map: &RowBuckets,
    w: usize,
) -> Result<()> {
    scatter_add_rows(g, "gather_rows_backward", dinp, dout, map, w)
}

/// dinp[rows] (N, C) += dout (M, V) @ wte; dwte (V, C) += dout^T @ gathered (M, C); `d` (M, C) is
/// scratch for the rows' gradient before the scatter. Llama's untied head takes the same path.
#[allow(clippy::too_many_arguments)]
pub fn logits_backward(
    g: &Gpu,
    dinp: &mut Buf,
    dwte: &mut Buf,
    d: &mut Buf,
    dout: &Buf,
    gathered: &Buf,
    rows: &RowBuckets,
    wte: &Buf,
    m: usize,
    v: usize,
    c: usize,
) -> Result<()> {
    if rows.row_end != m {
        bail!(
            "logits_backward: {} chosen rows for {m} rows of logits",
            rows.row_end
        );
    }
    need("logits_backward d", d.len(), m * c)?;
    g.zero(d)?;
    linear_backward(g, Some(d), dwte, dout, gathered, wte, m, c, v)?;
    gather_rows_backward(g, dinp, d, rows, c)
}
