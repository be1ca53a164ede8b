//! Launchers of `kernels/embedding.cu`, mirroring `cpu::ops::embedding`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{RowBuckets, blocks, int, need, scatter_add_rows};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// out (N, C) = wte[ids] + wpe[pos] (wpe optional)
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    g: &Gpu,
    out: &mut Buf,
    ids: &DevBuf<u32>,
    pos: &DevBuf<i32>,
    wte: &Buf,
    wpe: Option<&Buf>,
    n: usize,
    c: usize,
) -> Result<()> {
    need("embedding_forward out", out.len(), n * c)?;
    need("embedding_forward ids", ids.len().min(pos.len()), n)?;
    let args = [
        out.into(),
        ids.into(),
        pos.into(),
        wte.into(),
        wpe.into(),
        int("N", n)?.into(),
        int("C", c)?.into(),
    ];
    g.launch(
        "embedding.cu",
        "embedding_forward",
        blocks(n * c, 256),
        &args,
    )
}

/// out (N, C) = wte[ids] + wpe[pos] + wtt[types]
#[allow(clippy::too_many_arguments)]
pub fn bert_embedding_forward(
    g: &Gpu,
    out: &mut Buf,
    ids: &DevBuf<u32>,
    pos: &DevBuf<i32>,
    types: &DevBuf<u32>,
    wte: &Buf,
    wpe: &Buf,
    wtt: &Buf,
    n: usize,
    c: usize,
) -> Result<()> {
    need("bert_embedding_forward out", out.len(), n * c)?;
    need(
        "bert_embedding_forward ids",
        ids.len().min(pos.len()).min(types.len()),
        n,
    )?;
    let args = [
        out.into(),
        ids.into(),
        pos.into(),
        types.into(),
        wte.into(),
        wpe.into(),
        wtt.into(),
        int("N", n)?.into(),
        int("C", c)?.into(),
    ];
    g.launch(
        "embedding.cu",
        "bert_embedding_forward",
        blocks(n * c, 256),
        &args,
    )
}

/// dwte (V, C) += scatter of dout (N, C) by the token ids; dwpe (P, C) += scatter by the positions
pub fn embedding_backward(
    g: &Gpu,
    dwte: &mut Buf,
    dwpe: Option<(&mut Buf, &RowBuckets)>,
    dout: &Buf,
    ids: &RowBuckets,
    c: usize,
) -> Result<()> {
    scatter_add_rows(g, "embedding_backward wte", dwte, dout, ids, c)?;
    if let Some((dwpe, pos)) = dwpe {
        scatter_add_rows(g, "embedding_backward wpe", dwpe, dout, pos, c)?;
    }
    Ok(())
}
