//! Launchers of `kernels/attention.cu`, mirroring `cpu::ops::attention`: causal attention with left
//! padding and grouped-query heads, its cached form for decoding with the KV-cache append, and
//! the backward through the saved probabilities.

use crate::cuda::device::{Arg, DevBuf, Gpu};
use crate::cuda::ops::{blocks, int, need, view, warps};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// Sizes of an attention call, as `cpu::ops::attention::AttentionShape`.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub b: usize,
    pub t: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub(super) fn check(&self, what: &str) -> Result<()> {
        if self.head_dim > 128 || self.n_kv_head == 0 || !self.n_head.is_multiple_of(self.n_kv_head)
        {
            bail!(
                "{what}: head_dim {} (max 128), n_head {} must be a multiple of n_kv_head {}",
                self.head_dim,
                self.n_head,
                self.n_kv_head
            );
        }
        Ok(())
    }
}

/// A view of heads inside a buffer: (buffer, offset of the first row, row stride), in floats.
pub type Heads<'a> = (&'a Buf, usize, usize);

/// out (B*T, H*hd) = causal attention with left padding; q, k, v given as (buffer, offset, row
/// stride); att (B, H, T, T) receives the probabilities when given (training's forward saves them
/// for `attention_backward`)
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    g: &Gpu,
    out: &mut Buf,
    att: Option<&mut Buf>,
    q: Heads<'_>,
    k: Heads<'_>,
    v: Heads<'_>,
    start: &DevBuf<i32>,
    s: AttnShape,
) -> Result<()> {
    s.check("attention_forward")?;
    let (n, qw, kw) = (s.b * s.t, s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    need("attention_forward out", out.len(), n * qw)?;
    need("attention_forward start", start.len(), s.b)?;
    if let Some(a) = &att {
        need("attention_forward att", a.len(), s.b * s.n_head * s.t * s.t)?;
    }
    let args = [
        out.into(),
        att.map_or(Arg::NULL, Arg::from),
        view("attention_forward q", q, n, qw)?,
        view("attention_forward k", k, n, kw)?,
        view("attention_forward v", v, n, kw)?,
        start.into(),
        int("B", s.b)?.into(),
        int("T", s.t)?.into(),
        int("NH", s.n_head)?.into(),
        int("NKV", s.n_kv_head)?.into(),
        int("HS", s.head_dim)?.into(),
        (q.2 as i64).into(),
        (k.2 as i64).into(),
        (v.2 as i64).into(),
    ];
    g.launch(
        "attention.cu",
        "attention_forward",
        warps(n * s.n_head),
        &args,
    )
}

/// out (B*Tq, H*hd): queries at positions p0.. attend to the cache (B, Tmax, KVH*hd); att
/// (B, H, Tmax, Tmax) gets their probability rows when given
#[allow(clippy::too_many_arguments)]
pub fn attention_cached_forward(
    g: &Gpu,
    out: &mut Buf,
    att: Option<&mut Buf>,
    q: Heads<'_>,
    kcache: &Buf,
    vcache: &Buf,
    start: &DevBuf<i32>,
    p0: usize,
    tq: usize,
    tmax: usize,
    s: AttnShape,
) -> Result<()> {
    s.check("attention_cached_forward")?;
    let (qw, kw) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    need("attention_cached_forward out", out.len(), s.b * tq * qw)?;
    need(
        "attention_cached_forward cache",
        kcache.len().min(vcache.len()),
        s.b * tmax * kw,
    )?;
    need("attention_cached_forward start", start.len(), s.b)?;
    if let Some(a) = &att {
        need(
            "attention_cached_forward att",
            a.len(),
            s.b * s.n_head * tmax * tmax,
        )?;
    }
    if p0 + tq > tmax {
        bail!(
            "attention_cached_forward: positions {p0}..{} past the cache's {tmax}",
            p0 + tq
        );
    }
    let args = [
        out.into(),
        att.map_or(Arg::NULL, Arg::from),
        view("attention_cached_forward q", q, s.b * tq, qw)?,
        (q.2 as i64).into(),
        kcache.into(),
        vcache.into(),
        start.into(),
        int("p0", p0)?.into(),
        int("Tq", tq)?.into(),
        int("Tmax", tmax)?.into(),
        int("B", s.b)?.into(),
        int("NH", s.n_head)?.into(),
        int("NKV", s.n_kv_head)?.into(),
        int("HS", s.head_dim)?.into(),
    ];
    g.launch(
        "attention.cu",
        "attention_cached_forward",
        warps(s.b * tq * s.n_head),
        &args,
    )
}

/// cache_k, cache_v (B, Tmax, W) at positions p0..p0+Tq <- k, v (B*Tq rows, W) with row strides
#[allow(clippy::too_many_arguments)]
pub fn kv_append(
    g: &Gpu,
    cache_k: &mut Buf,
    cache_v: &mut Buf,
    k: Heads<'_>,
    v: Heads<'_>,
    p0: usize,
    b: usize,
    tq: usize,
    tmax: usize,
    w: usize,
) -> Result<()> {
    need(
        "kv_append cache",
        cache_k.len().min(cache_v.len()),
        b * tmax * w,
    )?;
    if p0 + tq > tmax {
        bail!(
            "kv_append: positions {p0}..{} past the cache's {tmax}",
            p0 + tq
        );
    }
    let args = [
        cache_k.into(),
        cache_v.into(),
        view("kv_append k", k, b * tq, w)?,
        view("kv_append v", v, b * tq, w)?,
        int("p0", p0)?.into(),
        int("B", b)?.into(),
        int("Tq", tq)?.into(),
        int("Tmax", tmax)?.into(),
        int("W", w)?.into(),
        (k.2 as i64).into(),
        (v.2 as i64).into(),
    ];
    g.launch("attention.cu", "kv_append", blocks(b * tq * w, 256), &args)
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
