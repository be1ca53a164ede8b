//! Launchers, one per kernel, named after the CPU function each kernel mirrors. Buffers are device
//! slices of the same shapes as the CPU functions' (given in the kernels' comments); every launch is
//! checked, and `Gpu::sync` surfaces asynchronous faults.

pub mod backward;
pub mod optim;
pub mod ppo_loss;
pub mod sgemm;

use crate::cuda::device::{Arg, DevBuf, Gpu, Grid};
use crate::cuda::ops::sgemm::{Layout, sgemm};
use anyhow::{Result, anyhow, bail};

type Buf = DevBuf<f32>;

pub(super) fn int(what: &str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| anyhow!("{what} = {x} does not fit the kernels' 32-bit sizes"))
}

pub(super) fn blocks(n: usize, threads: u32) -> Grid {
    Grid::linear(n, threads)
}

/// One block of `threads` per row.
pub(super) fn per_row(rows: usize, threads: u32) -> Grid {
    Grid::per_row(rows, threads)
}

pub(super) fn need(what: &str, buf_len: usize, want: usize) -> Result<()> {
    if buf_len < want {
        bail!("{what}: buffer holds {buf_len} values, needs {want}");
    }
    Ok(())
}

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

/// out (n) = f(inp) for the one-input elementwise kernels of `file`
fn unary(
    g: &Gpu,
    file: &'static str,
    entry: &str,
    out: &mut Buf,
    inp: &Buf,
    n: usize,
) -> Result<()> {
    need(entry, out.len().min(inp.len()), n)?;
    let args = [out.into(), inp.into(), (n as i64).into()];
    g.launch(file, entry, blocks(n, 256), &args)
}

/// out (n) = f(x, y) for the two-input elementwise kernels of `file`
fn binary(
    g: &Gpu,
    file: &'static str,
    entry: &str,
    out: &mut Buf,
    x: &Buf,
    y: &Buf,
    n: usize,
) -> Result<()> {
    need(entry, out.len().min(x.len()).min(y.len()), n)?;
    let args = [out.into(), x.into(), y.into(), (n as i64).into()];
    g.launch(file, entry, blocks(n, 256), &args)
}

/// out (n) = gelu_tanh(inp)
pub fn gelu_tanh_forward(g: &Gpu, out: &mut Buf, inp: &Buf, n: usize) -> Result<()> {
    unary(g, "gelu.cu", "gelu_tanh_forward", out, inp, n)
}

/// out (n) = gelu_erf(inp)
pub fn gelu_erf_forward(g: &Gpu, out: &mut Buf, inp: &Buf, n: usize) -> Result<()> {
    unary(g, "gelu.cu", "gelu_erf_forward", out, inp, n)
}

/// out (n) = a + b
pub fn residual_forward(g: &Gpu, out: &mut Buf, x: &Buf, y: &Buf, n: usize) -> Result<()> {
    binary(g, "residual.cu", "residual_forward", out, x, y, n)
}

/// out (n) = silu(gate) * up
pub fn swiglu_forward(g: &Gpu, out: &mut Buf, gate: &Buf, up: &Buf, n: usize) -> Result<()> {
    binary(g, "swiglu.cu", "swiglu_forward", out, gate, up, n)
}

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

/// out (N, OC) = inp (N, C) @ w^T + bias, w stored (OC, C)
#[allow(clippy::too_many_arguments)]
pub fn matmul_nt_forward(
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
    need("gather_rows rows", rows.len(), m)?;
    let args = [
        out.into(),
        inp.into(),
        rows.into(),
        int("M", m)?.into(),
        int("C", c)?.into(),
    ];
    g.launch("logits.cu", "gather_rows", blocks(m * c, 256), &args)
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
    matmul_nt_forward(g, out, gathered, wte, None, m, c, v)
}

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

/// One warp per (row, head).
pub(super) fn warps(n: usize) -> Grid {
    blocks(n * 32, 128)
}

/// A view of heads inside a buffer: (buffer, offset of the first row, row stride), in floats.
pub type Heads<'a> = (&'a Buf, usize, usize);

/// The start of a view, checked to leave `rows` rows of `width` in the buffer.
pub(super) fn view(
    what: &str,
    (buf, offset, stride): Heads<'_>,
    rows: usize,
    width: usize,
) -> Result<Arg> {
    need(
        what,
        buf.len(),
        offset + rows.saturating_sub(1) * stride + width,
    )?;
    buf.at(offset)
}

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

/// out (B*Tq, H*hd): queries at positions p0.. attend to the cache (B, Tmax, KVH*hd)
#[allow(clippy::too_many_arguments)]
pub fn attention_cached_forward(
    g: &Gpu,
    out: &mut Buf,
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
    if p0 + tq > tmax {
        bail!(
            "attention_cached_forward: positions {p0}..{} past the cache's {tmax}",
            p0 + tq
        );
    }
    let args = [
        out.into(),
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

/// out (N, C) = bidirectional attention within packed sequences [starts[s], starts[s+1])
#[allow(clippy::too_many_arguments)]
pub fn encoder_attention_forward(
    g: &Gpu,
    out: &mut Buf,
    qkv: &Buf,
    key_mask: &DevBuf<i32>,
    starts: &DevBuf<i32>,
    n_seq: usize,
    n: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    if nh == 0 || !c.is_multiple_of(nh) || c / nh > 128 {
        bail!("encoder_attention_forward: C {c} and NH {nh} must give a head width of at most 128");
    }
    need("encoder_attention_forward out", out.len(), n * c)?;
    need("encoder_attention_forward qkv", qkv.len(), n * 3 * c)?;
    need("encoder_attention_forward key_mask", key_mask.len(), n)?;
    need("encoder_attention_forward starts", starts.len(), n_seq + 1)?;
    let args = [
        out.into(),
        qkv.into(),
        key_mask.into(),
        starts.into(),
        int("n_seq", n_seq)?.into(),
        int("C", c)?.into(),
        int("NH", nh)?.into(),
    ];
    g.launch(
        "encoder_attention.cu",
        "encoder_attention_forward",
        warps(n * nh),
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

/// lp (P) = log_softmax(logits * inv_temp)[targets]; logits (P, V)
pub fn log_softmax_gather_forward(
    g: &Gpu,
    lp: &mut Buf,
    logits: &Buf,
    targets: &DevBuf<u32>,
    p: usize,
    v: usize,
    inv_temp: f32,
) -> Result<()> {
    need("log_softmax_gather_forward logits", logits.len(), p * v)?;
    need(
        "log_softmax_gather_forward lp",
        lp.len().min(targets.len()),
        p,
    )?;
    let args = [
        lp.into(),
        logits.into(),
        targets.into(),
        int("P", p)?.into(),
        int("V", v)?.into(),
        inv_temp.into(),
    ];
    g.launch(
        "softmax.cu",
        "log_softmax_gather_forward",
        per_row(p, 256),
        &args,
    )
}

/// ent (P) = entropy of softmax(logits) per row
pub fn entropy_forward(g: &Gpu, ent: &mut Buf, logits: &Buf, p: usize, v: usize) -> Result<()> {
    need("entropy_forward logits", logits.len(), p * v)?;
    need("entropy_forward ent", ent.len(), p)?;
    let args = [
        ent.into(),
        logits.into(),
        int("P", p)?.into(),
        int("V", v)?.into(),
    ];
    g.launch("softmax.cu", "entropy_forward", per_row(p, 256), &args)
}

/// Sampling settings of one launch, as `sample::SamplingParams` (top_k 0 = off, top_p 1 = off).
#[derive(Clone, Copy, Debug)]
pub struct SampleArgs {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
    pub step: u32,
}

/// tokens (B), logprobs (B) from logits (B, V); `u` (B) gives the uniform draws, else a counter RNG
#[allow(clippy::too_many_arguments)]
pub fn sample_forward(
    g: &Gpu,
    tokens: &mut DevBuf<u32>,
    logprobs: &mut Buf,
    logits: &Buf,
    u: Option<&Buf>,
    b: usize,
    v: usize,
    s: SampleArgs,
) -> Result<()> {
    need("sample_forward logits", logits.len(), b * v)?;
    need("sample_forward tokens", tokens.len().min(logprobs.len()), b)?;
    if let Some(u) = u {
        need("sample_forward u", u.len(), b)?;
    }
    let args = [
        tokens.into(),
        logprobs.into(),
        logits.into(),
        u.into(),
        int("B", b)?.into(),
        int("V", v)?.into(),
        s.temperature.into(),
        int("top_k", s.top_k)?.into(),
        s.top_p.into(),
        s.seed.into(),
        s.step.into(),
    ];
    g.launch("sampling.cu", "sample_forward", per_row(b, 1024), &args)
}

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

/// x (N, H, HS) rotated in place by pos (N) with the tables cos, sin (max_pos, HS/2) of
/// `cpu::ops::rope_table`; `offset`/`stride` locate the heads
#[allow(clippy::too_many_arguments)]
pub fn rope_forward(
    g: &Gpu,
    x: &mut Buf,
    offset: usize,
    stride: usize,
    pos: &DevBuf<i32>,
    cos: &Buf,
    sin: &Buf,
    n: usize,
    h: usize,
    hs: usize,
) -> Result<()> {
    need("rope_forward pos", pos.len(), n)?;
    let args = [
        view("rope_forward x", (&*x, offset, stride), n, h * hs)?,
        pos.into(),
        cos.into(),
        sin.into(),
        int("N", n)?.into(),
        int("H", h)?.into(),
        int("HS", hs)?.into(),
        (stride as i64).into(),
    ];
    g.launch(
        "rope.cu",
        "rope_forward",
        blocks(n * h * hs / 2, 256),
        &args,
    )
}

/// Shaping codes of `pool_cosine_shape_forward`, in the kernel's order.
pub const SHAPE_PGSRM: i32 = 0;
pub const SHAPE_TRUNCATE: i32 = 1;
pub const SHAPE_EUCLIDEAN: i32 = 2;
pub const SHAPE_BINARY: i32 = 3;

/// reward (B), emb (B, D) from hidden (N, D) with answer b in rows [starts[b], starts[b+1]) (those
/// with mask set pool), parent (B, D); exact (B) for the binary shaping
#[allow(clippy::too_many_arguments)]
pub fn pool_cosine_shape_forward(
    g: &Gpu,
    reward: &mut Buf,
    emb: &mut Buf,
    hidden: &Buf,
    mask: &DevBuf<i32>,
    starts: &DevBuf<i32>,
    parent: &Buf,
    exact: Option<&DevBuf<i32>>,
    b: usize,
    d: usize,
    shaping: i32,
    power: f32,
) -> Result<()> {
    need("pool_cosine_shape_forward starts", starts.len(), b + 1)?;
    need("pool_cosine_shape_forward parent", parent.len(), b * d)?;
    need("pool_cosine_shape_forward emb", emb.len(), b * d)?;
    need("pool_cosine_shape_forward reward", reward.len(), b)?;
    let args = [
        reward.into(),
        emb.into(),
        hidden.into(),
        mask.into(),
        starts.into(),
        parent.into(),
        exact.into(),
        int("B", b)?.into(),
        int("D", d)?.into(),
        shaping.into(),
        power.into(),
    ];
    g.launch(
        "reward.cu",
        "pool_cosine_shape_forward",
        per_row(b, 128),
        &args,
    )
}
