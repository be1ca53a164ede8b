//! GPT-2's training passes on a device, mirroring `cpu::gpt2::{forward_into, backward_into}` op
//! for op: a forward over a whole left-padded batch that keeps what backward needs (attention
//! probabilities included) and computes logits only at the chosen rows, then a backward that adds
//! every parameter's gradient into a `GpuGpt2Weights`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::gpt2::{GpuGpt2, GpuGpt2Weights};
use crate::cuda::model::train_batch::TrainBatch;
use crate::cuda::ops::optim::{TensorList, grad_zero};
use crate::cuda::ops::{self as k, AttnShape, QkvGrad};
use crate::model::gpt2::Gpt2Config;
use anyhow::Result;

type Buf = DevBuf<f32>;

/// What one block saves for backward; N = B T rows.
pub(super) struct BlockActs {
    pub(super) ln1: Buf,      // (N, C)
    pub(super) ln1_mean: Buf, // (N)
    pub(super) ln1_rstd: Buf, // (N)
    pub(super) qkv: Buf,      // (N, 3C)
    pub(super) att: Buf,      // (B, H, T, T)
    pub(super) atty: Buf,     // (N, C)
    pub(super) res1: Buf,     // (N, C)  input + attention branch
    pub(super) ln2: Buf,      // (N, C)
    pub(super) ln2_mean: Buf, // (N)
    pub(super) ln2_rstd: Buf, // (N)
    pub(super) fch: Buf,      // (N, 4C)
    pub(super) fch_gelu: Buf, // (N, 4C)
    pub(super) res2: Buf,     // (N, C)  res1 + MLP branch: the block's output
}

/// Saved activations and backward scratch of one batch shape (B, T, M) on the device. Keep one
/// and pass it to every step of that shape: nothing is reallocated.
pub struct Gpt2Activations {
    b: usize,
    t: usize,
    m: usize,
    /// The most logit rows the buffers hold.
    m_cap: usize,
    pub(super) encoded: Buf, // (N, C)
    pub(super) blocks: Vec<BlockActs>,
    lnf: Buf,      // (N, C)
    lnf_mean: Buf, // (N)
    lnf_rstd: Buf, // (N)
    gathered: Buf, // (M, C)
    /// (M, V) logits of the chosen rows after `forward`.
    pub logits: Buf,
    scratch: Buf,   // (N, C)
    dres: Buf,      // (N, C)
    dln2: Buf,      // (N, C) of ln_2's output (and first of ln_f's)
    dln1: Buf,      // (N, C) of ln_1's output
    datty: Buf,     // (N, C)
    dqkv: Buf,      // (N, 3C)
    dfch: Buf,      // (N, 4C)
    dfch_gelu: Buf, // (N, 4C)
    dscores: Buf,   // (B, H, T, T)
    dgathered: Buf, // (M, C)
    /// The gradients backward zeroes before the head, and before each layer, as kept lists: one
    /// launch each, not a memset per buffer.
    zero_lists: [Option<TensorList>; 2],
}

impl Gpt2Activations {
    pub fn new(g: &Gpu, cfg: &Gpt2Config, b: usize, t: usize, m: usize) -> Result<Self> {
        let (c, n) = (cfg.n_embd, b * t);
        let scores = b * cfg.n_head * t * t;
        let rows = |w: usize| g.alloc::<f32>(n * w);
        let block = || -> Result<BlockActs> {
            Ok(BlockActs {
                ln1: rows(c)?,
                ln1_mean: rows(1)?,
                ln1_rstd: rows(1)?,
                qkv: rows(3 * c)?,
                att: g.alloc(scores)?,
                atty: rows(c)?,
                res1: rows(c)?,
                ln2: rows(c)?,
                ln2_mean: rows(1)?,
                ln2_rstd: rows(1)?,
                fch: rows(4 * c)?,
                fch_gelu: rows(4 * c)?,
                res2: rows(c)?,
            })
        };
        Ok(Gpt2Activations {
            b,
            t,
            m,
            m_cap: m,
            encoded: rows(c)?,
            blocks: (0..cfg.n_layer).map(|_| block()).collect::<Result<_>>()?,
            lnf: rows(c)?,
            lnf_mean: rows(1)?,
            lnf_rstd: rows(1)?,
            gathered: g.alloc((m * c).max(1))?,
            logits: g.alloc((m * cfg.vocab_size).max(1))?,
            scratch: rows(c)?,
            dres: rows(c)?,
            dln2: rows(c)?,
            dln1: rows(c)?,
            datty: rows(c)?,
            dqkv: rows(3 * c)?,
            dfch: rows(4 * c)?,
            dfch_gelu: rows(4 * c)?,
            dscores: g.alloc(scores)?,
            dgathered: g.alloc((m * c).max(1))?,
            zero_lists: [None, None],
        })
    }

    /// The final hidden states (N, C) after ln_f: what the head multiplies and the value head reads.
    pub fn final_hidden(&self) -> &Buf {
        &self.lnf
    }

    fn check(&self, batch: &TrainBatch) -> Result<()> {
        batch.check_shape(self.b, self.t, self.m)
    }

    /// Whether these activations serve a batch of `b` x `t` with `m` logit rows (`set_rows`).
    pub(super) fn fits(&self, b: usize, t: usize, m: usize) -> bool {
        (self.b, self.t) == (b, t) && m <= self.m_cap
    }

    /// Logit rows `m` of the batch to come, at most as many as the activations were made for.
    pub(super) fn set_rows(&mut self, m: usize) -> Result<()> {
        if m > self.m_cap {
            anyhow::bail!("activations made for {} logit rows given {m}", self.m_cap);
        }
        self.m = m;
        Ok(())
    }
}

fn attn_shape(cfg: &Gpt2Config, batch: &TrainBatch) -> AttnShape {
    AttnShape {
        b: batch.b,
        t: batch.t,
        n_head: cfg.n_head,
        n_kv_head: cfg.n_head,
        head_dim: cfg.head_dim(),
    }
}

/// Runs the model on `batch`, leaving the logits (M, V) of its chosen rows in `acts.logits` and
/// what `backward` needs in `acts`.
pub fn forward(
    g: &Gpu,
    model: &GpuGpt2,
    batch: &TrainBatch,
    acts: &mut Gpt2Activations,
) -> Result<()> {
    acts.check(batch)?;
    let cfg = &model.config;
    let w = &model.weights;
    let (c, v, n, m) = (cfg.n_embd, cfg.vocab_size, batch.n(), batch.m);
    let eps = cfg.layer_norm_epsilon;
    let shape = attn_shape(cfg, batch);
    k::embedding_forward(
        g,
        &mut acts.encoded,
        &batch.tokens,
        &batch.pos,
        &w.wte,
        Some(&w.wpe),
        n,
        c,
    )?;
    for l in 0..cfg.n_layer {
        let (done, rest) = acts.blocks.split_at_mut(l);
        let x = if l == 0 {
            &acts.encoded
        } else {
            &done[l - 1].res2
        };
        let a = &mut rest[0];
        let p = &w.blocks[l];
        k::layernorm_forward(
            g,
            &mut a.ln1,
            &mut a.ln1_mean,
            &mut a.ln1_rstd,
            x,
            &p.ln_1_w,
            &p.ln_1_b,
            n,
            c,
            eps,
        )?;
        k::matmul_forward(
            g,
            &mut a.qkv,
            &a.ln1,
            &p.attn_w,
            Some(&p.attn_b),
            n,
            c,
            3 * c,
        )?;
        k::attention_forward(
            g,
            &mut a.atty,
            Some(&mut a.att),
            (&a.qkv, 0, 3 * c),
            (&a.qkv, c, 3 * c),
            (&a.qkv, 2 * c, 3 * c),
            &batch.start,
            shape,
        )?;
        k::matmul_forward(
            g,
            &mut acts.scratch,
            &a.atty,
            &p.attn_proj_w,
            Some(&p.attn_proj_b),
            n,
            c,
            c,
        )?;
        k::residual_forward(g, &mut a.res1, x, &acts.scratch, n * c)?;
        k::layernorm_forward(
            g,
            &mut a.ln2,
            &mut a.ln2_mean,
            &mut a.ln2_rstd,
            &a.res1,
            &p.ln_2_w,
            &p.ln_2_b,
            n,
            c,
            eps,
        )?;
        k::matmul_forward(g, &mut a.fch, &a.ln2, &p.fc_w, Some(&p.fc_b), n, c, 4 * c)?;
        k::gelu_tanh_forward(g, &mut a.fch_gelu, &a.fch, n * 4 * c)?;
        k::matmul_forward(
            g,
            &mut acts.scratch,
            &a.fch_gelu,
            &p.fc_proj_w,
            Some(&p.fc_proj_b),
            n,
            4 * c,
            c,
        )?;
        k::residual_forward(g, &mut a.res2, &a.res1, &acts.scratch, n * c)?;
    }
    final_norm(g, model, n, acts)?;
    if m > 0 {
        k::logits_forward(
            g,
            &mut acts.logits,
            &mut acts.gathered,
            &acts.lnf,
            &batch.rows,
            &w.wte,
            m,
            v,
            c,
        )?;
    }
    Ok(())
}

/// lnf (N, C) = ln_f(the last block's output), with its mean and rstd.
fn final_norm(g: &Gpu, model: &GpuGpt2, n: usize, acts: &mut Gpt2Activations) -> Result<()> {
    let cfg = &model.config;
    let last = acts.blocks.last().map_or(&acts.encoded, |a| &a.res2);
    k::layernorm_forward(
        g,
        &mut acts.lnf,
        &mut acts.lnf_mean,
        &mut acts.lnf_rstd,
        last,
        &model.weights.ln_f_w,
        &model.weights.ln_f_b,
        n,
        cfg.n_embd,
        cfg.layer_norm_epsilon,
    )
}

/// Completes the activations a rollout recorded (`cuda::model::generate`) for `backward` on
/// `batch`, the rollout's own batch: the final norm of every row, and at the chosen rows their
/// normed states and, as `forward` leaves them, the logits, here taken from those the rollout
/// sampled from (`logits` rows `logit_rows` (M)).
pub fn finish_recorded(
    g: &Gpu,
    model: &GpuGpt2,
    batch: &TrainBatch,
    acts: &mut Gpt2Activations,
    logits: &Buf,
    logit_rows: &DevBuf<i32>,
) -> Result<()> {
    acts.set_rows(batch.m)?;
    acts.check(batch)?;
    let (c, v, m) = (model.config.n_embd, model.config.vocab_size, batch.m);
    final_norm(g, model, batch.n(), acts)?;
    if m > 0 {
        k::logits_forward_rows(g, &mut acts.gathered, &acts.lnf, &batch.rows, m, c)?;
        k::logits_forward_rows(g, &mut acts.logits, logits, logit_rows, m, v)?;
    }
    Ok(())
}

/// Adds the gradient of every parameter, given dlogits (M, V) for the chosen rows of the last
/// `forward`, into `grads` (zero it first for a fresh step). The tied head adds into wte.
pub fn backward(
    g: &Gpu,
    model: &GpuGpt2,
    batch: &TrainBatch,
    acts: &mut Gpt2Activations,
    dlogits: &Buf,
    grads: &mut GpuGpt2Weights,
) -> Result<()> {
    acts.check(batch)?;
    let cfg = &model.config;
    let w = &model.weights;
    let (c, v, n, m) = (cfg.n_embd, cfg.vocab_size, batch.n(), batch.m);
    let shape = attn_shape(cfg, batch);
    let a = acts;
    let [head_zeros, layer_zeros] = &mut a.zero_lists;
    grad_zero(g, &mut [&mut a.dln2, &mut a.dres], head_zeros)?;
    if m > 0 {
        k::logits_backward(
            g,
            &mut a.dln2,
            &mut grads.wte,
            &mut a.dgathered,
            dlogits,
            &a.gathered,
            &batch.row_buckets,
            &w.wte,
            m,
            v,
            c,
        )?;
    }
    let last = a.blocks.last().map_or(&a.encoded, |b| &b.res2);
    k::layernorm_backward(
        g,
        &mut a.dres,
        &mut grads.ln_f_w,
        &mut grads.ln_f_b,
        &a.dln2,
        last,
        &w.ln_f_w,
        &a.lnf_mean,
        &a.lnf_rstd,
        n,
        c,
    )?;
    // `dres` carries the gradient of the residual stream: a residual add passes its output
    // gradient unchanged to both inputs, so each branch reads it as its output gradient.
    for l in (0..cfg.n_layer).rev() {
        let s = &a.blocks[l];
        let x = if l == 0 {
            &a.encoded
        } else {
            &a.blocks[l - 1].res2
        };
        let p = &w.blocks[l];
        let d = &mut grads.blocks[l];
        let zeroed = &mut [
            &mut a.dfch_gelu,
            &mut a.dfch,
            &mut a.dln2,
            &mut a.datty,
            &mut a.dqkv,
            &mut a.dln1,
        ];
        grad_zero(g, zeroed, layer_zeros)?;
        // MLP branch: res2 = res1 + fc_proj(gelu(fc(ln2(res1))))
        k::matmul_backward(
            g,
            Some(&mut a.dfch_gelu),
            &mut d.fc_proj_w,
            Some(&mut d.fc_proj_b),
            &a.dres,
            &s.fch_gelu,
            &p.fc_proj_w,
            n,
            4 * c,
            c,
        )?;
        k::gelu_tanh_backward(g, &mut a.dfch, &s.fch, &a.dfch_gelu, n * 4 * c)?;
        k::matmul_backward(
            g,
            Some(&mut a.dln2),
            &mut d.fc_w,
            Some(&mut d.fc_b),
            &a.dfch,
            &s.ln2,
            &p.fc_w,
            n,
            c,
            4 * c,
        )?;
        k::layernorm_backward(
            g,
            &mut a.dres,
            &mut d.ln_2_w,
            &mut d.ln_2_b,
            &a.dln2,
            &s.res1,
            &p.ln_2_w,
            &s.ln2_mean,
            &s.ln2_rstd,
            n,
            c,
        )?;
        // Attention branch: res1 = x + attn_proj(attention(c_attn(ln1(x))))
        k::matmul_backward(
            g,
            Some(&mut a.datty),
            &mut d.attn_proj_w,
            Some(&mut d.attn_proj_b),
            &a.dres,
            &s.atty,
            &p.attn_proj_w,
            n,
            c,
            c,
        )?;
        k::attention_backward(
            g,
            QkvGrad::Fused(&mut a.dqkv),
            &mut a.dscores,
            &a.datty,
            &s.att,
            (&s.qkv, 0, 3 * c),
            (&s.qkv, c, 3 * c),
            (&s.qkv, 2 * c, 3 * c),
            &batch.start,
            shape,
        )?;
        k::matmul_backward(
            g,
            Some(&mut a.dln1),
            &mut d.attn_w,
            Some(&mut d.attn_b),
            &a.dqkv,
            &s.ln1,
            &p.attn_w,
            n,
            c,
            3 * c,
        )?;
        k::layernorm_backward(
            g,
            &mut a.dres,
            &mut d.ln_1_w,
            &mut d.ln_1_b,
            &a.dln1,
            x,
            &p.ln_1_w,
            &s.ln1_mean,
            &s.ln1_rstd,
            n,
            c,
        )?;
    }
    k::embedding_backward(
        g,
        &mut grads.wte,
        Some((&mut grads.wpe, &batch.pos_buckets)),
        &a.dres,
        &batch.token_buckets,
        c,
    )
}
