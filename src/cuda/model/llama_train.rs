//! Llama's training passes on a device, mirroring `cpu::llama::{forward, backward_into}` op for
//! op: a forward over a whole left-padded batch that keeps what backward needs (rotated q and k,
//! attention probabilities) and computes logits only at the chosen rows, then a backward that
//! adds every parameter's gradient into a `GpuLlamaWeights` (a tied head into `embed_tokens`).

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::llama::{GpuLlama, GpuLlamaWeights};
use crate::cuda::model::train_batch::TrainBatch;
use crate::cuda::ops::optim::{TensorList, grad_zero};
use crate::cuda::ops::{self as k, AttnShape, QkvGrad};
use crate::model::llama::LlamaConfig;
use anyhow::Result;

type Buf = DevBuf<f32>;

/// Activations of one layer saved for backward. N = B T rows.
pub(super) struct LayerActs {
    pub(super) x: Buf,     // (N, C) residual stream entering the layer
    pub(super) rstd1: Buf, // (N)
    pub(super) xn1: Buf,   // (N, C)
    pub(super) q: Buf,     // (N, H*D) after rotation
    pub(super) k: Buf,     // (N, KV*D) after rotation
    pub(super) v: Buf,     // (N, KV*D)
    pub(super) att: Buf,   // (B, H, T, T)
    pub(super) ao: Buf,    // (N, H*D) attention output before o_proj
    pub(super) x2: Buf,    // (N, C) residual after attention
    pub(super) rstd2: Buf, // (N)
    pub(super) xn2: Buf,   // (N, C)
    pub(super) gate: Buf,  // (N, F)
    pub(super) up: Buf,    // (N, F)
    pub(super) act: Buf,   // (N, F)
}

/// Saved activations and backward scratch of one batch shape (B, T, M) on the device.
pub struct LlamaActivations {
    b: usize,
    t: usize,
    m: usize,
    /// The most logit rows the buffers hold.
    m_cap: usize,
    pub(super) layers: Vec<LayerActs>,
    pub(super) xl: Buf, // (N, C) output of the last layer
    rstdf: Buf,         // (N)
    xf: Buf,            // (N, C) after the final norm
    gathered: Buf,      // (M, C)
    /// (M, V) logits of the chosen rows after `forward`.
    pub logits: Buf,
    tmp: Buf, // (N, C)
    // backward scratch
    dx: Buf,        // (N, C)
    dxf: Buf,       // (N, C)
    dxn2: Buf,      // (N, C) of the MLP's norm output
    dxn1: Buf,      // (N, C) of the attention's norm output
    dact: Buf,      // (N, F)
    dgate: Buf,     // (N, F)
    dup: Buf,       // (N, F)
    dao: Buf,       // (N, H*D)
    dq: Buf,        // (N, H*D)
    dk: Buf,        // (N, KV*D)
    dv: Buf,        // (N, KV*D)
    dq0: Buf,       // (N, H*D)
    dk0: Buf,       // (N, KV*D)
    dscores: Buf,   // (B, H, T, T)
    dgathered: Buf, // (M, C)
    /// The gradients backward zeroes before the head, and before each layer, as kept lists: one
    /// launch each, not a memset per buffer.
    zero_lists: [Option<TensorList>; 2],
}

impl LlamaActivations {
    pub fn new(g: &Gpu, cfg: &LlamaConfig, b: usize, t: usize, m: usize) -> Result<Self> {
        let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (qw, kw) = (cfg.num_attention_heads * d, cfg.n_kv_heads() * d);
        let n = b * t;
        let scores = b * cfg.num_attention_heads * t * t;
        let rows = |w: usize| g.alloc::<f32>(n * w);
        let layer = || -> Result<LayerActs> {
            Ok(LayerActs {
                x: rows(c)?,
                rstd1: rows(1)?,
                xn1: rows(c)?,
                q: rows(qw)?,
                k: rows(kw)?,
                v: rows(kw)?,
                att: g.alloc(scores)?,
                ao: rows(qw)?,
                x2: rows(c)?,
                rstd2: rows(1)?,
                xn2: rows(c)?,
                gate: rows(f)?,
                up: rows(f)?,
                act: rows(f)?,
            })
        };
        Ok(LlamaActivations {
            b,
            t,
            m,
            m_cap: m,
            layers: (0..cfg.num_hidden_layers)
                .map(|_| layer())
                .collect::<Result<_>>()?,
            xl: rows(c)?,
            rstdf: rows(1)?,
            xf: rows(c)?,
            gathered: g.alloc((m * c).max(1))?,
            logits: g.alloc((m * cfg.vocab_size).max(1))?,
            tmp: rows(c)?,
            dx: rows(c)?,
            dxf: rows(c)?,
            dxn2: rows(c)?,
            dxn1: rows(c)?,
            dact: rows(f)?,
            dgate: rows(f)?,
            dup: rows(f)?,
            dao: rows(qw)?,
            dq: rows(qw)?,
            dk: rows(kw)?,
            dv: rows(kw)?,
            dq0: rows(qw)?,
            dk0: rows(kw)?,
            dscores: g.alloc(scores)?,
            dgathered: g.alloc((m * c).max(1))?,
            zero_lists: [None, None],
        })
    }

    /// The final hidden states (N, C) after the last norm: what the head multiplies and the value
    /// head reads.
    pub fn final_hidden(&self) -> &Buf {
        &self.xf
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

fn attn_shape(cfg: &LlamaConfig, batch: &TrainBatch) -> AttnShape {
    AttnShape {
        b: batch.b,
        t: batch.t,
        n_head: cfg.num_attention_heads,
        n_kv_head: cfg.n_kv_heads(),
        head_dim: cfg.head_dim(),
    }
}

/// Runs the model on `batch`, leaving the logits (M, V) of its chosen rows in `acts.logits` and
/// what `backward` needs in `acts`.
pub fn forward(
    g: &Gpu,
    model: &GpuLlama,
    batch: &TrainBatch,
    acts: &mut LlamaActivations,
) -> Result<()> {
    acts.check(batch)?;
    let cfg = &model.config;
    let w = &model.weights;
    let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
    let (qw, kw) = (h * d, kv * d);
    let (n, m) = (batch.n(), batch.m);
    let eps = cfg.rms_norm_eps;
    let shape = attn_shape(cfg, batch);
    let first = acts.layers.first_mut().map_or(&mut acts.xl, |a| &mut a.x);
    k::embedding_forward(
        g,
        first,
        &batch.tokens,
        &batch.pos,
        &w.embed_tokens,
        None,
        n,
        c,
    )?;
    for li in 0..cfg.num_hidden_layers {
        let (here, next) = acts.layers.split_at_mut(li + 1);
        let a = &mut here[li];
        // The layer's output is the next layer's input, or the last hidden state.
        let out = next.first_mut().map_or(&mut acts.xl, |b| &mut b.x);
        let lw = &w.layers[li];
        k::rmsnorm_forward(
            g,
            &mut a.xn1,
            &mut a.rstd1,
            &a.x,
            &lw.input_layernorm,
            n,
            c,
            eps,
        )?;
        k::linear_forward(g, &mut a.q, &a.xn1, &lw.q_proj, None, n, c, qw)?;
        k::linear_forward(g, &mut a.k, &a.xn1, &lw.k_proj, None, n, c, kw)?;
        k::linear_forward(g, &mut a.v, &a.xn1, &lw.v_proj, None, n, c, kw)?;
        k::rope_forward(
            g, &mut a.q, 0, qw, &batch.pos, &model.cos, &model.sin, n, h, d,
        )?;
        k::rope_forward(
            g, &mut a.k, 0, kw, &batch.pos, &model.cos, &model.sin, n, kv, d,
        )?;
        k::attention_forward(
            g,
            &mut a.ao,
            Some(&mut a.att),
            (&a.q, 0, qw),
            (&a.k, 0, kw),
            (&a.v, 0, kw),
            &batch.start,
            shape,
        )?;
        k::linear_forward(g, &mut acts.tmp, &a.ao, &lw.o_proj, None, n, qw, c)?;
        k::residual_forward(g, &mut a.x2, &acts.tmp, &a.x, n * c)?;
        k::rmsnorm_forward(
            g,
            &mut a.xn2,
            &mut a.rstd2,
            &a.x2,
            &lw.post_attention_layernorm,
            n,
            c,
            eps,
        )?;
        k::linear_forward(g, &mut a.gate, &a.xn2, &lw.gate_proj, None, n, c, f)?;
        k::linear_forward(g, &mut a.up, &a.xn2, &lw.up_proj, None, n, c, f)?;
        k::swiglu_forward(g, &mut a.act, &a.gate, &a.up, n * f)?;
        k::linear_forward(g, &mut acts.tmp, &a.act, &lw.down_proj, None, n, f, c)?;
        k::residual_forward(g, out, &acts.tmp, &a.x2, n * c)?;
    }
    final_norm(g, model, n, acts)?;
    if m > 0 {
        k::logits_forward(
            g,
            &mut acts.logits,
            &mut acts.gathered,
            &acts.xf,
            &batch.rows,
            w.head(),
            m,
            cfg.vocab_size,
            c,
        )?;
    }
    Ok(())
}

/// xf (N, C) = norm(the last layer's output), with its rstd.
fn final_norm(g: &Gpu, model: &GpuLlama, n: usize, acts: &mut LlamaActivations) -> Result<()> {
    let cfg = &model.config;
    k::rmsnorm_forward(
        g,
        &mut acts.xf,
        &mut acts.rstdf,
        &acts.xl,
        &model.weights.norm,
        n,
        cfg.hidden_size,
        cfg.rms_norm_eps,
    )
}

/// Completes the activations a rollout recorded (`cuda::model::generate`) for `backward` on
/// `batch`, the rollout's own batch: the final norm of every row, and at the chosen rows their
/// normed states and, as `forward` leaves them, the logits, here taken from those the rollout
/// sampled from (`logits` rows `logit_rows` (M)).
pub fn finish_recorded(
    g: &Gpu,
    model: &GpuLlama,
    batch: &TrainBatch,
    acts: &mut LlamaActivations,
    logits: &Buf,
    logit_rows: &DevBuf<i32>,
) -> Result<()> {
    acts.set_rows(batch.m)?;
    acts.check(batch)?;
    let (c, v, m) = (model.config.hidden_size, model.config.vocab_size, batch.m);
    final_norm(g, model, batch.n(), acts)?;
    if m > 0 {
        k::logits_forward_rows(g, &mut acts.gathered, &acts.xf, &batch.rows, m, c)?;
        k::logits_forward_rows(g, &mut acts.logits, logits, logit_rows, m, v)?;
    }
    Ok(())
}

/// Adds the gradient of every parameter, given dlogits (M, V) for the chosen rows of the last
/// `forward`, into `grads` (zero it first for a fresh step). A tied head adds into
/// `embed_tokens`.
pub fn backward(
    g: &Gpu,
    model: &GpuLlama,
    batch: &TrainBatch,
    acts: &mut LlamaActivations,
    dlogits: &Buf,
    grads: &mut GpuLlamaWeights,
) -> Result<()> {
    acts.check(batch)?;
    let cfg = &model.config;
    let w = &model.weights;
    let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
    let (qw, kw) = (h * d, kv * d);
    let (n, m) = (batch.n(), batch.m);
    let shape = attn_shape(cfg, batch);
    let a = acts;
    let [head_zeros, layer_zeros] = &mut a.zero_lists;
    grad_zero(g, &mut [&mut a.dxf, &mut a.dx], head_zeros)?;
    // Head: only the chosen rows receive gradient.
    if m > 0 {
        let dhead = match &mut grads.lm_head {
            Some(hd) => hd,
            None => &mut grads.embed_tokens,
        };
        k::logits_backward(
            g,
            &mut a.dxf,
            dhead,
            &mut a.dgathered,
            dlogits,
            &a.gathered,
            &batch.row_buckets,
            w.head(),
            m,
            cfg.vocab_size,
            c,
        )?;
    }
    k::rmsnorm_backward(
        g,
        &mut a.dx,
        &mut grads.norm,
        &a.dxf,
        &a.xl,
        &w.norm,
        &a.rstdf,
        n,
        c,
    )?;
    for li in (0..cfg.num_hidden_layers).rev() {
        let (lw, s, lg) = (&w.layers[li], &a.layers[li], &mut grads.layers[li]);
        let zeroed = &mut [
            &mut a.dact,
            &mut a.dgate,
            &mut a.dup,
            &mut a.dxn2,
            &mut a.dao,
            &mut a.dq,
            &mut a.dk,
            &mut a.dv,
            &mut a.dq0,
            &mut a.dk0,
            &mut a.dxn1,
        ];
        grad_zero(g, zeroed, layer_zeros)?;
        // MLP branch; dx is also the gradient of x2 through the residual.
        k::linear_backward(
            g,
            Some(&mut a.dact),
            &mut lg.down_proj,
            &a.dx,
            &s.act,
            &lw.down_proj,
            n,
            f,
            c,
        )?;
        k::swiglu_backward(g, &mut a.dgate, &mut a.dup, &a.dact, &s.gate, &s.up, n * f)?;
        k::linear_backward(
            g,
            Some(&mut a.dxn2),
            &mut lg.gate_proj,
            &a.dgate,
            &s.xn2,
            &lw.gate_proj,
            n,
            c,
            f,
        )?;
        k::linear_backward(
            g,
            Some(&mut a.dxn2),
            &mut lg.up_proj,
            &a.dup,
            &s.xn2,
            &lw.up_proj,
            n,
            c,
            f,
        )?;
        k::rmsnorm_backward(
            g,
            &mut a.dx,
            &mut lg.post_attention_layernorm,
            &a.dxn2,
            &s.x2,
            &lw.post_attention_layernorm,
            &s.rstd2,
            n,
            c,
        )?;
        // Attention branch.
        k::linear_backward(
            g,
            Some(&mut a.dao),
            &mut lg.o_proj,
            &a.dx,
            &s.ao,
            &lw.o_proj,
            n,
            qw,
            c,
        )?;
        k::attention_backward(
            g,
            QkvGrad::Split(&mut a.dq, &mut a.dk, &mut a.dv),
            &mut a.dscores,
            &a.dao,
            &s.att,
            (&s.q, 0, qw),
            (&s.k, 0, kw),
            (&s.v, 0, kw),
            &batch.start,
            shape,
        )?;
        k::rope_backward(
            g, &mut a.dq0, &a.dq, &batch.pos, &model.cos, &model.sin, n, h, d,
        )?;
        k::rope_backward(
            g, &mut a.dk0, &a.dk, &batch.pos, &model.cos, &model.sin, n, kv, d,
        )?;
        k::linear_backward(
            g,
            Some(&mut a.dxn1),
            &mut lg.q_proj,
            &a.dq0,
            &s.xn1,
            &lw.q_proj,
            n,
            c,
            qw,
        )?;
        k::linear_backward(
            g,
            Some(&mut a.dxn1),
            &mut lg.k_proj,
            &a.dk0,
            &s.xn1,
            &lw.k_proj,
            n,
            c,
            kw,
        )?;
        k::linear_backward(
            g,
            Some(&mut a.dxn1),
            &mut lg.v_proj,
            &a.dv,
            &s.xn1,
            &lw.v_proj,
            n,
            c,
            kw,
        )?;
        k::rmsnorm_backward(
            g,
            &mut a.dx,
            &mut lg.input_layernorm,
            &a.dxn1,
            &s.x,
            &lw.input_layernorm,
            &s.rstd1,
            n,
            c,
        )?;
    }
    k::embedding_backward(
        g,
        &mut grads.embed_tokens,
        None,
        &a.dx,
        &batch.token_buckets,
        c,
    )
}
