//! Launchers, one per kernel, named after the CPU function each kernel mirrors. Buffers are device
//! slices of the same shapes as the CPU functions' (given in the kernels' comments); every launch is
//! checked, and `Gpu::sync` surfaces asynchronous faults.

use super::device::Gpu;
use anyhow::{Result, anyhow, bail};
use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};

type Buf = CudaSlice<f32>;

fn int(what: &str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| anyhow!("{what} = {x} does not fit the kernels' 32-bit sizes"))
}

fn blocks(n: usize, threads: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(threads).max(1) as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `threads` per row.
fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn go(name: &str, mut args: LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: each launcher passes the arguments its kernel declares, in order, with buffers whose
    // lengths the launcher checked against the sizes it passes.
    unsafe { args.launch(cfg) }.map_err(|e| anyhow!("launching {name}: {e:?}"))?;
    Ok(())
}

fn need(what: &str, buf_len: usize, want: usize) -> Result<()> {
    if buf_len < want {
        bail!("{what}: buffer holds {buf_len} values, needs {want}");
    }
    Ok(())
}

const NULL: u64 = 0;

/// out (N, C) = wte[ids] + wpe[pos] (wpe optional)
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    g: &Gpu,
    out: &mut Buf,
    ids: &CudaSlice<u32>,
    pos: &CudaSlice<i32>,
    wte: &Buf,
    wpe: Option<&Buf>,
    n: usize,
    c: usize,
) -> Result<()> {
    need("embedding_forward out", out.len(), n * c)?;
    let f = g.function("elementwise.cu", "embedding_forward")?;
    let (n_, c_) = (int("N", n)?, int("C", c)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(out).arg(ids).arg(pos).arg(wte);
    match wpe {
        Some(w) => a.arg(w),
        None => a.arg(&NULL),
    };
    a.arg(&n_).arg(&c_);
    go("embedding_forward", a, blocks(n * c, 256))
}

/// out (N, C) = wte[ids] + wpe[pos] + wtt[types]
#[allow(clippy::too_many_arguments)]
pub fn bert_embedding_forward(
    g: &Gpu,
    out: &mut Buf,
    ids: &CudaSlice<u32>,
    pos: &CudaSlice<i32>,
    types: &CudaSlice<u32>,
    wte: &Buf,
    wpe: &Buf,
    wtt: &Buf,
    n: usize,
    c: usize,
) -> Result<()> {
    need("bert_embedding_forward out", out.len(), n * c)?;
    let f = g.function("elementwise.cu", "bert_embedding_forward")?;
    let (n_, c_) = (int("N", n)?, int("C", c)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(out)
        .arg(ids)
        .arg(pos)
        .arg(types)
        .arg(wte)
        .arg(wpe)
        .arg(wtt)
        .arg(&n_)
        .arg(&c_);
    go("bert_embedding_forward", a, blocks(n * c, 256))
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
    need("layernorm_forward out", out.len(), n * c)?;
    let f = g.function("elementwise.cu", "layernorm_forward")?;
    let (n_, c_) = (int("N", n)?, int("C", c)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(out)
        .arg(mean)
        .arg(rstd)
        .arg(inp)
        .arg(w)
        .arg(b)
        .arg(&n_)
        .arg(&c_)
        .arg(&eps);
    go("layernorm_forward", a, per_row(n, 256))
}

fn unary(g: &Gpu, entry: &str, out: &mut Buf, inp: &Buf, n: usize) -> Result<()> {
    need(entry, out.len().min(inp.len()), n)?;
    let f = g.function("elementwise.cu", entry)?;
    let n_ = n as i64;
    let mut a = g.stream.launch_builder(&f);
    a.arg(out).arg(inp).arg(&n_);
    go(entry, a, blocks(n, 256))
}

/// out (n) = gelu_tanh(inp)
pub fn gelu_tanh_forward(g: &Gpu, out: &mut Buf, inp: &Buf, n: usize) -> Result<()> {
    unary(g, "gelu_tanh_forward", out, inp, n)
}

/// out (n) = gelu_erf(inp)
pub fn gelu_erf_forward(g: &Gpu, out: &mut Buf, inp: &Buf, n: usize) -> Result<()> {
    unary(g, "gelu_erf_forward", out, inp, n)
}

/// out (n) = a + b
pub fn residual_forward(g: &Gpu, out: &mut Buf, x: &Buf, y: &Buf, n: usize) -> Result<()> {
    need("residual_forward", out.len().min(x.len()).min(y.len()), n)?;
    let f = g.function("elementwise.cu", "residual_forward")?;
    let n_ = n as i64;
    let mut a = g.stream.launch_builder(&f);
    a.arg(out).arg(x).arg(y).arg(&n_);
    go("residual_forward", a, blocks(n, 256))
}

fn gemm_grid(n: usize, oc: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (oc.div_ceil(128) as u32, n.div_ceil(128) as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    g: &Gpu,
    entry: &str,
    out: &mut Buf,
    inp: &Buf,
    w: &Buf,
    bias: Option<&Buf>,
    n: usize,
    c: usize,
    oc: usize,
) -> Result<()> {
    need(entry, out.len(), n * oc)?;
    need(entry, inp.len(), n * c)?;
    need(entry, w.len(), c * oc)?;
    let f = g.function("matmul.cu", entry)?;
    let (n_, c_, oc_) = (int("N", n)?, int("C", c)?, int("OC", oc)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(out).arg(inp).arg(w);
    match bias {
        Some(b) => a.arg(b),
        None => a.arg(&NULL),
    };
    a.arg(&n_).arg(&c_).arg(&oc_);
    go(entry, a, gemm_grid(n, oc))
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
    gemm(g, "matmul_forward", out, inp, w, bias, n, c, oc)
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
    gemm(g, "matmul_nt_forward", out, inp, w, bias, n, c, oc)
}

/// out (M, C) = inp[rows]: the gather half of `logits_forward`
pub fn logits_forward_rows(
    g: &Gpu,
    out: &mut Buf,
    inp: &Buf,
    rows: &CudaSlice<i32>,
    m: usize,
    c: usize,
) -> Result<()> {
    need("gather_rows out", out.len(), m * c)?;
    let f = g.function("elementwise.cu", "gather_rows")?;
    let (m_, c_) = (int("M", m)?, int("C", c)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(out).arg(inp).arg(rows).arg(&m_).arg(&c_);
    go("gather_rows", a, blocks(m * c, 256))
}

/// out (M, V) = inp[rows] (M, C) @ wte^T; gathered (M, C) receives inp[rows]
#[allow(clippy::too_many_arguments)]
pub fn logits_forward(
    g: &Gpu,
    out: &mut Buf,
    gathered: &mut Buf,
    inp: &Buf,
    rows: &CudaSlice<i32>,
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
    fn check(&self, what: &str) -> Result<()> {
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

fn warps(n: usize) -> LaunchConfig {
    blocks(n * 32, 128)
}

/// out (B*T, H*hd) = causal attention with left padding; q, k, v given as (buffer, offset, row stride)
pub fn attention_forward(
    g: &Gpu,
    out: &mut Buf,
    q: (&Buf, usize, usize),
    k: (&Buf, usize, usize),
    v: (&Buf, usize, usize),
    start: &CudaSlice<i32>,
    s: AttnShape,
) -> Result<()> {
    s.check("attention_forward")?;
    need(
        "attention_forward out",
        out.len(),
        s.b * s.t * s.n_head * s.head_dim,
    )?;
    let f = g.function("attention.cu", "attention_forward")?;
    let (qv, kv, vv) = (q.0.slice(q.1..), k.0.slice(k.1..), v.0.slice(v.1..));
    let dims = [
        int("B", s.b)?,
        int("T", s.t)?,
        int("NH", s.n_head)?,
        int("NKV", s.n_kv_head)?,
        int("HS", s.head_dim)?,
    ];
    let strides = [q.2 as i64, k.2 as i64, v.2 as i64];
    let mut a = g.stream.launch_builder(&f);
    a.arg(out).arg(&qv).arg(&kv).arg(&vv).arg(start);
    for d in &dims {
        a.arg(d);
    }
    for st in &strides {
        a.arg(st);
    }
    go("attention_forward", a, warps(s.b * s.t * s.n_head))
}

/// out (B*Tq, H*hd): queries at positions p0.. attend to the cache (B, Tmax, KVH*hd)
#[allow(clippy::too_many_arguments)]
pub fn attention_cached_forward(
    g: &Gpu,
    out: &mut Buf,
    q: (&Buf, usize, usize),
    kcache: &Buf,
    vcache: &Buf,
    start: &CudaSlice<i32>,
    p0: usize,
    tq: usize,
    tmax: usize,
    s: AttnShape,
) -> Result<()> {
    s.check("attention_cached_forward")?;
    need(
        "attention_cached_forward out",
        out.len(),
        s.b * tq * s.n_head * s.head_dim,
    )?;
    let f = g.function("attention.cu", "attention_cached_forward")?;
    let qv = q.0.slice(q.1..);
    let q_stride = q.2 as i64;
    let dims = [
        int("p0", p0)?,
        int("Tq", tq)?,
        int("Tmax", tmax)?,
        int("B", s.b)?,
        int("NH", s.n_head)?,
        int("NKV", s.n_kv_head)?,
        int("HS", s.head_dim)?,
    ];
    let mut a = g.stream.launch_builder(&f);
    a.arg(out)
        .arg(&qv)
        .arg(&q_stride)
        .arg(kcache)
        .arg(vcache)
        .arg(start);
    for d in &dims {
        a.arg(d);
    }
    go("attention_cached_forward", a, warps(s.b * tq * s.n_head))
}

/// out (N, C) = bidirectional attention within packed sequences [starts[s], starts[s+1])
#[allow(clippy::too_many_arguments)]
pub fn encoder_attention_forward(
    g: &Gpu,
    out: &mut Buf,
    qkv: &Buf,
    key_mask: &CudaSlice<i32>,
    starts: &CudaSlice<i32>,
    n_seq: usize,
    n: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    if nh == 0 || !c.is_multiple_of(nh) || c / nh > 128 {
        bail!("encoder_attention_forward: C {c} and NH {nh} must give a head width of at most 128");
    }
    need("encoder_attention_forward out", out.len(), n * c)?;
    let f = g.function("attention.cu", "encoder_attention_forward")?;
    let (s_, c_, nh_) = (int("n_seq", n_seq)?, int("C", c)?, int("NH", nh)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(out)
        .arg(qkv)
        .arg(key_mask)
        .arg(starts)
        .arg(&s_)
        .arg(&c_)
        .arg(&nh_);
    go("encoder_attention_forward", a, warps(n * nh))
}

/// cache_k, cache_v (B, Tmax, W) at positions p0..p0+Tq <- k, v (B*Tq rows, W) with row strides
#[allow(clippy::too_many_arguments)]
pub fn kv_append(
    g: &Gpu,
    cache_k: &mut Buf,
    cache_v: &mut Buf,
    k: (&Buf, usize, usize),
    v: (&Buf, usize, usize),
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
    let f = g.function("attention.cu", "kv_append")?;
    let (kv, vv) = (k.0.slice(k.1..), v.0.slice(v.1..));
    let dims = [
        int("p0", p0)?,
        int("B", b)?,
        int("Tq", tq)?,
        int("Tmax", tmax)?,
        int("W", w)?,
    ];
    let (ks, vs) = (k.2 as i64, v.2 as i64);
    let mut a = g.stream.launch_builder(&f);
    a.arg(cache_k).arg(cache_v).arg(&kv).arg(&vv);
    for d in &dims {
        a.arg(d);
    }
    a.arg(&ks).arg(&vs);
    go("kv_append", a, blocks(b * tq * w, 256))
}

/// lp (P) = log_softmax(logits * inv_temp)[targets]; logits (P, V)
pub fn log_softmax_gather_forward(
    g: &Gpu,
    lp: &mut Buf,
    logits: &Buf,
    targets: &CudaSlice<u32>,
    p: usize,
    v: usize,
    inv_temp: f32,
) -> Result<()> {
    need("log_softmax_gather_forward logits", logits.len(), p * v)?;
    let f = g.function("logprob.cu", "log_softmax_gather_forward")?;
    let (p_, v_) = (int("P", p)?, int("V", v)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(lp)
        .arg(logits)
        .arg(targets)
        .arg(&p_)
        .arg(&v_)
        .arg(&inv_temp);
    go("log_softmax_gather_forward", a, per_row(p, 256))
}

/// ent (P) = entropy of softmax(logits) per row
pub fn entropy_forward(g: &Gpu, ent: &mut Buf, logits: &Buf, p: usize, v: usize) -> Result<()> {
    need("entropy_forward logits", logits.len(), p * v)?;
    let f = g.function("logprob.cu", "entropy_forward")?;
    let (p_, v_) = (int("P", p)?, int("V", v)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(ent).arg(logits).arg(&p_).arg(&v_);
    go("entropy_forward", a, per_row(p, 256))
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
    tokens: &mut CudaSlice<u32>,
    logprobs: &mut Buf,
    logits: &Buf,
    u: Option<&Buf>,
    b: usize,
    v: usize,
    s: SampleArgs,
) -> Result<()> {
    need("sample_forward logits", logits.len(), b * v)?;
    let f = g.function("sampling.cu", "sample_forward")?;
    let (b_, v_, k_) = (int("B", b)?, int("V", v)?, int("top_k", s.top_k)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(tokens).arg(logprobs).arg(logits);
    match u {
        Some(u) => a.arg(u),
        None => a.arg(&NULL),
    };
    a.arg(&b_)
        .arg(&v_)
        .arg(&s.temperature)
        .arg(&k_)
        .arg(&s.top_p)
        .arg(&s.seed)
        .arg(&s.step);
    go("sample_forward", a, per_row(b, 1024))
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
    need("rmsnorm_forward out", out.len(), n * c)?;
    let f = g.function("llama.cu", "rmsnorm_forward")?;
    let (n_, c_) = (int("N", n)?, int("C", c)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(out)
        .arg(rrms)
        .arg(inp)
        .arg(w)
        .arg(&n_)
        .arg(&c_)
        .arg(&eps);
    go("rmsnorm_forward", a, per_row(n, 256))
}

/// x (N, H, HS) rotated in place by pos (N) with the tables cos, sin (max_pos, HS/2) of
/// `cpu::ops::rope_table`; `offset`/`stride` locate the heads
#[allow(clippy::too_many_arguments)]
pub fn rope_forward(
    g: &Gpu,
    x: &mut Buf,
    offset: usize,
    stride: usize,
    pos: &CudaSlice<i32>,
    cos: &Buf,
    sin: &Buf,
    n: usize,
    h: usize,
    hs: usize,
) -> Result<()> {
    need(
        "rope_forward x",
        x.len(),
        offset + n.saturating_sub(1) * stride + h * hs,
    )?;
    let f = g.function("llama.cu", "rope_forward")?;
    let mut xv = x.slice_mut(offset..);
    let (n_, h_, hs_) = (int("N", n)?, int("H", h)?, int("HS", hs)?);
    let st = stride as i64;
    let mut a = g.stream.launch_builder(&f);
    a.arg(&mut xv)
        .arg(pos)
        .arg(cos)
        .arg(sin)
        .arg(&n_)
        .arg(&h_)
        .arg(&hs_)
        .arg(&st);
    go("rope_forward", a, blocks(n * h * hs / 2, 256))
}

/// out (n) = silu(gate) * up
pub fn swiglu_forward(g: &Gpu, out: &mut Buf, gate: &Buf, up: &Buf, n: usize) -> Result<()> {
    need("swiglu_forward", out.len().min(gate.len()).min(up.len()), n)?;
    let f = g.function("llama.cu", "swiglu_forward")?;
    let n_ = n as i64;
    let mut a = g.stream.launch_builder(&f);
    a.arg(out).arg(gate).arg(up).arg(&n_);
    go("swiglu_forward", a, blocks(n, 256))
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
    mask: &CudaSlice<i32>,
    starts: &CudaSlice<i32>,
    parent: &Buf,
    exact: Option<&CudaSlice<i32>>,
    b: usize,
    d: usize,
    shaping: i32,
    power: f32,
) -> Result<()> {
    need("pool_cosine_shape_forward starts", starts.len(), b + 1)?;
    need("pool_cosine_shape_forward parent", parent.len(), b * d)?;
    let f = g.function("reward.cu", "pool_cosine_shape_forward")?;
    let (b_, d_) = (int("B", b)?, int("D", d)?);
    let mut a = g.stream.launch_builder(&f);
    a.arg(reward)
        .arg(emb)
        .arg(hidden)
        .arg(mask)
        .arg(starts)
        .arg(parent);
    match exact {
        Some(e) => a.arg(e),
        None => a.arg(&NULL),
    };
    a.arg(&b_).arg(&d_).arg(&shaping).arg(&power);
    go("pool_cosine_shape_forward", a, per_row(b, 128))
}
