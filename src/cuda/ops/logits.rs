//! Launchers of the language-model head, mirroring `cpu::ops::logits`: the row gather of
//! `kernels/logits.cu`, the product through `linear`, and the scatter back onto the chosen rows.

use crate::cuda::device::{DevBuf, Gpu, Grid};
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

/// Tensors that `scatter_rows_list` copies in one launch, as the kernel reads them: the
/// destination and source addresses and the widths, kept on the device while they hold.
pub struct RowCopies {
    /// What the list was made from: (destination, source, width) of each tensor.
    made_from: Vec<(u64, u64, usize)>,
    dst: DevBuf<u64>,
    src: DevBuf<u64>,
    widths: DevBuf<i32>,
}

/// For each (out, inp, width) of `copies`: out[rows] = inp (M, width), as `scatter_rows`, in one
/// launch. `slot` keeps the list's table on the device between calls; it is made anew (an
/// upload, so not while a graph is recorded) only when the tensors differ from the last call's.
pub fn scatter_rows_list(
    g: &Gpu,
    slot: &mut Option<RowCopies>,
    copies: &mut [(&mut Buf, &Buf, usize)],
    rows: &DevBuf<i32>,
    m: usize,
) -> Result<()> {
    need("scatter_rows_list rows", rows.len(), m)?;
    for (_, inp, width) in copies.iter() {
        need("scatter_rows_list inp", inp.len(), m * width)?;
    }
    if m == 0 || copies.is_empty() {
        return Ok(());
    }
    let made_from: Vec<(u64, u64, usize)> = copies
        .iter()
        .map(|(out, inp, width)| (out.address(), inp.address(), *width))
        .collect();
    if slot.as_ref().is_none_or(|l| l.made_from != made_from) {
        let widths = made_from
            .iter()
            .map(|&(_, _, w)| int("width", w))
            .collect::<Result<Vec<_>>>()?;
        *slot = Some(RowCopies {
            dst: g.upload(&made_from.iter().map(|c| c.0).collect::<Vec<_>>())?,
            src: g.upload(&made_from.iter().map(|c| c.1).collect::<Vec<_>>())?,
            widths: g.upload(&widths)?,
            made_from,
        });
    }
    let list = slot.as_ref().expect("made above");
    let args = [
        (&list.dst).into(),
        (&list.src).into(),
        (&list.widths).into(),
        rows.into(),
        int("M", m)?.into(),
    ];
    let grid = Grid {
        blocks: [int("M", m)? as u32, int("tensors", copies.len())? as u32, 1],
        threads: [128, 1, 1],
        shared_bytes: 0,
    };
    g.launch("logits.cu", "scatter_rows_list", grid, &args)
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
