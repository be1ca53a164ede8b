//! Launchers of the backward kernels, one per CPU backward function of `cpu::ops` and named after
//! it, with the same arguments (device buffers of the CPU functions' shapes). Like the CPU
//! functions they add into their gradients; every parameter gradient is reduced in a fixed order,
//! so a launch gives the same bits every time.

use crate::cuda::device::{Arg, DevBuf, Gpu, Grid};
use crate::cuda::ops::sgemm::{Layout, sgemm};
use crate::cuda::ops::{AttnShape, Heads, blocks, int, need, per_row, view, warps};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// Rows grouped by a key, the order-fixed form of a scatter: for each distinct key (ascending),
/// the rows that carry it (ascending). The host builds it from indices it already holds (token
/// ids, position ids, chosen rows), so the device adds every table row's contributions in row
/// order, as the CPU does, without atomics.
pub struct RowBuckets {
    keys: DevBuf<i32>,
    starts: DevBuf<i32>,
    rows: DevBuf<i32>,
    n_keys: usize,
    /// One past the largest key and row (the sizes the scattered-into and scattered buffers need).
    key_end: usize,
    row_end: usize,
}

impl RowBuckets {
    /// The buckets of `keys` (one per row: row i carries keys[i]).
    pub fn new(g: &Gpu, keys: &[usize]) -> Result<Self> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i]); // stable: rows stay ascending within a key
        let (mut uniq, mut starts) = (Vec::new(), Vec::new());
        for (j, &i) in order.iter().enumerate() {
            if j == 0 || keys[i] != keys[order[j - 1]] {
                uniq.push(int("key", keys[i])?);
                starts.push(int("rows", j)?);
            }
        }
        starts.push(int("rows", order.len())?);
        let rows = order
            .iter()
            .map(|&i| int("row", i))
            .collect::<Result<Vec<_>>>()?;
        // A CUDA allocation cannot be empty: no keys still upload one unused entry.
        let nonempty = |mut v: Vec<i32>| {
            if v.is_empty() {
                v.push(0);
            }
            v
        };
        Ok(RowBuckets {
            n_keys: uniq.len(),
            key_end: keys.iter().max().map_or(0, |&k| k + 1),
            row_end: keys.len(),
            keys: g.upload(&nonempty(uniq))?,
            starts: g.upload(&starts)?,
            rows: g.upload(&nonempty(rows))?,
        })
    }
}

/// dtable (K, C) += dout (N, C) scattered by the buckets' keys: row i adds onto table row key(i)
fn scatter_rows(
    g: &Gpu,
    what: &str,
    dtable: &mut Buf,
    dout: &Buf,
    by: &RowBuckets,
    c: usize,
) -> Result<()> {
    need(what, dtable.len(), by.key_end * c)?;
    need(what, dout.len(), by.row_end * c)?;
    if by.n_keys == 0 {
        return Ok(());
    }
    let args = [
        dtable.into(),
        dout.into(),
        (&by.keys).into(),
        (&by.starts).into(),
        (&by.rows).into(),
        int("keys", by.n_keys)?.into(),
        int("C", c)?.into(),
    ];
    g.launch(
        "embedding.cu",
        "embedding_backward",
        blocks(by.n_keys * c, 256),
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
    scatter_rows(g, "embedding_backward wte", dwte, dout, ids, c)?;
    if let Some((dwpe, pos)) = dwpe {
        scatter_rows(g, "embedding_backward wpe", dwpe, dout, pos, c)?;
    }
    Ok(())
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
    scatter_rows(g, "gather_rows_backward", dinp, dout, map, w)
}

/// Blocks of (32, COLUMN_ROWS) threads, each owning 32 columns of a parameter gradient.
fn columns(c: usize) -> Grid {
    Grid {
        blocks: [c.div_ceil(32).max(1) as u32, 1, 1],
        threads: [32, 16, 1],
        shared_bytes: 0,
    }
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
    g.launch(
        "layernorm.cu",
        "layernorm_backward_params",
        columns(c),
        &args,
    )
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
        g.launch("matmul.cu", "matmul_backward_dbias", columns(oc), &args)?;
    }
    Ok(())
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

/// Gradients of q, k and v: one buffer in the fused layout, or three; the views of the forward's
/// q, k, v (offsets and row strides) say where each head sits, as `cpu::ops::QkvGrad`.
pub enum QkvGrad<'a> {
    Fused(&'a mut Buf),
    Split(&'a mut Buf, &'a mut Buf, &'a mut Buf),
}

/// dq, dk, dv (layouts as q, k, v) += gradients from dout (B*T, H*hd) through the saved att
/// (B, H, T, T); dscores (B, H, T, T) is scratch for the scores' gradient
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    g: &Gpu,
    dqkv: QkvGrad<'_>,
    dscores: &mut Buf,
    dout: &Buf,
    att: &Buf,
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    start: &DevBuf<i32>,
    s: AttnShape,
) -> Result<()> {
    s.check("attention_backward")?;
    let (n, qw, kw) = (s.b * s.t, s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    let scores = s.b * s.n_head * s.t * s.t;
    need("attention_backward dout", dout.len(), n * qw)?;
    need(
        "attention_backward att",
        att.len().min(dscores.len()),
        scores,
    )?;
    need("attention_backward start", start.len(), s.b)?;
    let (dq, dk, dv) = match &dqkv {
        QkvGrad::Fused(buf) => (&**buf, &**buf, &**buf),
        QkvGrad::Split(a, b, c) => (&**a, &**b, &**c),
    };
    // The gradients sit where their values do: the same offsets and row strides.
    let strides = [q.2, k.2, v.2].map(|x| Arg::I64(x as i64));
    let dq = view("attention_backward dq", (dq, q.1, q.2), n, qw)?;
    let dk = view("attention_backward dk", (dk, k.1, k.2), n, kw)?;
    let dv = view("attention_backward dv", (dv, v.1, v.2), n, kw)?;
    let (q, k, v) = (
        view("attention_backward q", q, n, qw)?,
        view("attention_backward k", k, n, kw)?,
        view("attention_backward v", v, n, kw)?,
    );
    let sizes: [Arg; 5] = [
        int("B", s.b)?.into(),
        int("T", s.t)?.into(),
        int("NH", s.n_head)?.into(),
        int("NKV", s.n_kv_head)?.into(),
        int("HS", s.head_dim)?.into(),
    ];
    let scores_arg: Arg = (&*dscores).into();
    let mut args = vec![dq, scores_arg, dout.into(), att.into(), k, v, start.into()];
    args.extend(sizes);
    args.extend(strides);
    g.launch(
        "attention.cu",
        "attention_backward_dq",
        warps(n * s.n_head),
        &args,
    )?;
    let mut args = vec![dk, dv, dout.into(), att.into(), scores_arg, q, start.into()];
    args.extend(sizes);
    args.extend(strides);
    g.launch(
        "attention.cu",
        "attention_backward_dkv",
        warps(n * s.n_kv_head),
        &args,
    )
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
    g.launch("rmsnorm.cu", "rmsnorm_backward_dweight", columns(c), &args)
}

/// dinp (N, H*hd) += rotate back(dout (N, H*hd)) by pos (N) with the tables cos, sin (max_pos, hd/2)
#[allow(clippy::too_many_arguments)]
pub fn rope_backward(
    g: &Gpu,
    dinp: &mut Buf,
    dout: &Buf,
    pos: &DevBuf<i32>,
    cos: &Buf,
    sin: &Buf,
    n: usize,
    h: usize,
    hs: usize,
) -> Result<()> {
    need("rope_backward", dinp.len().min(dout.len()), n * h * hs)?;
    need("rope_backward pos", pos.len(), n)?;
    let args = [
        dinp.into(),
        dout.into(),
        pos.into(),
        cos.into(),
        sin.into(),
        int("N", n)?.into(),
        int("H", h)?.into(),
        int("HS", hs)?.into(),
    ];
    g.launch(
        "rope.cu",
        "rope_backward",
        blocks(n * h * hs / 2, 256),
        &args,
    )
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
