//! Llama-family models on a device, mirroring `cpu::llama`'s cached decoding step for step:
//! RMSNorm, q/k/v projections (weights (out, in), as `linear_forward` takes them), rotary
//! embeddings from the same f32 tables, grouped-query attention over the KV cache, the SiLU-gated
//! MLP; the final norm and the head. Decoding itself is `cuda::decode`'s, shared with GPT-2.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::decode::{CachedRows, DeviceModel, KvCache};
use crate::cuda::ops::{self as k, AttnShape};
use crate::model::llama::rope_table;
use crate::model::llama::{Llama, LlamaConfig, LlamaWeights};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// One decoder layer's tensors, as `model::llama::LlamaLayer`.
pub struct Layer {
    pub input_layernorm: Buf,
    pub q_proj: Buf,
    pub k_proj: Buf,
    pub v_proj: Buf,
    pub o_proj: Buf,
    pub post_attention_layernorm: Buf,
    pub gate_proj: Buf,
    pub up_proj: Buf,
    pub down_proj: Buf,
}

/// All of a Llama model's tensors on the device, in the host's layout: like `LlamaWeights`, the
/// same struct holds the parameters and their gradients.
pub struct GpuLlamaWeights {
    pub embed_tokens: Buf,
    pub layers: Vec<Layer>,
    pub norm: Buf,
    /// The untied head, when the model has one; else `embed_tokens` serves.
    pub lm_head: Option<Buf>,
}

impl GpuLlamaWeights {
    /// Tensors of `cfg`'s shapes made by `make(len)`, one after another in `LlamaWeights::named`
    /// order.
    fn build(cfg: &LlamaConfig, mut make: impl FnMut(usize) -> Result<Buf>) -> Result<Self> {
        let (c, d, f) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
        let (qw, kw) = (cfg.num_attention_heads * d, cfg.n_kv_heads() * d);
        let embed_tokens = make(cfg.vocab_size * c)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            layers.push(Layer {
                input_layernorm: make(c)?,
                q_proj: make(qw * c)?,
                k_proj: make(kw * c)?,
                v_proj: make(kw * c)?,
                o_proj: make(c * qw)?,
                post_attention_layernorm: make(c)?,
                gate_proj: make(f * c)?,
                up_proj: make(f * c)?,
                down_proj: make(c * f)?,
            });
        }
        let norm = make(c)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(make(cfg.vocab_size * c)?)
        };
        Ok(GpuLlamaWeights {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    pub fn upload(g: &Gpu, cfg: &LlamaConfig, w: &LlamaWeights) -> Result<Self> {
        if w.lm_head.is_none() != cfg.tie_word_embeddings {
            bail!("the weights' head and the config's tie_word_embeddings disagree");
        }
        let mut host = w.named().into_iter();
        Self::build(cfg, |n| match host.next() {
            Some((_, t)) if t.numel() == n => g.upload(&t.data),
            Some((name, t)) => bail!("{name} holds {} values, the config needs {n}", t.numel()),
            None => bail!("the weights hold fewer tensors than the config needs"),
        })
    }

    /// Zeros of every tensor (gradients to add into).
    pub fn zeros(g: &Gpu, cfg: &LlamaConfig) -> Result<Self> {
        Self::build(cfg, |n| g.zeros(n))
    }

    /// The output head: `lm_head` or, when tied, the embedding.
    pub fn head(&self) -> &Buf {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Every tensor in `LlamaWeights::named` order.
    pub fn list(&self) -> Vec<&Buf> {
        let mut out = vec![&self.embed_tokens];
        for l in &self.layers {
            out.extend([
                &l.input_layernorm,
                &l.q_proj,
                &l.k_proj,
                &l.v_proj,
                &l.o_proj,
                &l.post_attention_layernorm,
                &l.gate_proj,
                &l.up_proj,
                &l.down_proj,
            ]);
        }
        out.push(&self.norm);
        out.extend(&self.lm_head);
        out
    }

    /// Every tensor in `LlamaWeights::named` order, to write into (an optimiser step).
    pub fn list_mut(&mut self) -> Vec<&mut Buf> {
        let mut out = vec![&mut self.embed_tokens];
        for l in &mut self.layers {
            out.extend([
                &mut l.input_layernorm,
                &mut l.q_proj,
                &mut l.k_proj,
                &mut l.v_proj,
                &mut l.o_proj,
                &mut l.post_attention_layernorm,
                &mut l.gate_proj,
                &mut l.up_proj,
                &mut l.down_proj,
            ]);
        }
        out.push(&mut self.norm);
        out.extend(&mut self.lm_head);
        out
    }

    /// The tensors on the host.
    pub fn download(&self, g: &Gpu, cfg: &LlamaConfig) -> Result<LlamaWeights> {
        let mut w = LlamaWeights::zeros(cfg);
        for ((_, t), b) in w.named_mut().into_iter().zip(self.list()) {
            t.data = g.download(b)?;
        }
        Ok(w)
    }
}

/// A Llama model on the device: its config, parameters and rotary tables.
pub struct GpuLlama {
    pub config: LlamaConfig,
    pub weights: GpuLlamaWeights,
    /// The rotary tables (max_position_embeddings, head_dim / 2) of `model::llama::rope_table`.
    pub cos: Buf,
    pub sin: Buf,
}

impl GpuLlama {
    pub fn upload(g: &Gpu, m: &Llama) -> Result<Self> {
        let cfg = &m.config;
        let (cos, sin) = rope_table(
            cfg.max_position_embeddings.max(1),
            cfg.head_dim(),
            cfg.rope_theta,
        );
        Ok(GpuLlama {
            config: m.config.clone(),
            weights: GpuLlamaWeights::upload(g, cfg, &m.weights)?,
            cos: g.upload(&cos)?,
            sin: g.upload(&sin)?,
        })
    }
}

impl DeviceModel for GpuLlama {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn n_layer(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn kv_width(&self) -> usize {
        self.config.n_kv_heads() * self.config.head_dim()
    }

    fn check_prompts(&self, prompts: &[Vec<u32>], max_new: usize, pad: u32) -> Result<()> {
        let cfg = &self.config;
        crate::batch::check_prompts(
            prompts,
            max_new,
            pad,
            cfg.max_position_embeddings,
            cfg.vocab_size,
        )
    }

    fn forward_cached(&self, g: &Gpu, rows: &CachedRows, cache: &mut KvCache) -> Result<Buf> {
        let cfg = &self.config;
        let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
        let (qw, kw) = (h * d, kv * d);
        let n = rows.b * rows.tq;
        let eps = cfg.rms_norm_eps;
        let shape = AttnShape {
            b: rows.b,
            t: rows.tq,
            n_head: h,
            n_kv_head: kv,
            head_dim: d,
        };
        let buf = |width: usize| g.alloc::<f32>(n * width);
        let (mut x, mut x2, mut xn, mut o) = (buf(c)?, buf(c)?, buf(c)?, buf(c)?);
        let (mut rrms, mut q, mut ao) = (buf(1)?, buf(qw)?, buf(qw)?);
        let (mut kk, mut vv) = (buf(kw)?, buf(kw)?);
        let (mut gate, mut up, mut act) = (buf(f)?, buf(f)?, buf(f)?);
        k::embedding_forward(
            g,
            &mut x,
            rows.ids,
            rows.pos,
            &self.weights.embed_tokens,
            None,
            n,
            c,
        )?;
        for (li, l) in self.weights.layers.iter().enumerate() {
            k::rmsnorm_forward(g, &mut xn, &mut rrms, &x, &l.input_layernorm, n, c, eps)?;
            k::linear_forward(g, &mut q, &xn, &l.q_proj, None, n, c, qw)?;
            k::linear_forward(g, &mut kk, &xn, &l.k_proj, None, n, c, kw)?;
            k::linear_forward(g, &mut vv, &xn, &l.v_proj, None, n, c, kw)?;
            k::rope_forward(g, &mut q, 0, qw, rows.pos, &self.cos, &self.sin, n, h, d)?;
            k::rope_forward(g, &mut kk, 0, kw, rows.pos, &self.cos, &self.sin, n, kv, d)?;
            k::kv_append(
                g,
                &mut cache.k[li],
                &mut cache.v[li],
                (&kk, 0, kw),
                (&vv, 0, kw),
                rows.p0,
                rows.b,
                rows.tq,
                cache.tmax,
                kw,
            )?;
            k::attention_cached_forward(
                g,
                &mut ao,
                (&q, 0, qw),
                &cache.k[li],
                &cache.v[li],
                rows.start,
                rows.p0,
                rows.tq,
                cache.tmax,
                shape,
            )?;
            k::linear_forward(g, &mut o, &ao, &l.o_proj, None, n, qw, c)?;
            k::residual_forward(g, &mut x2, &o, &x, n * c)?;
            k::rmsnorm_forward(
                g,
                &mut xn,
                &mut rrms,
                &x2,
                &l.post_attention_layernorm,
                n,
                c,
                eps,
            )?;
            k::linear_forward(g, &mut gate, &xn, &l.gate_proj, None, n, c, f)?;
            k::linear_forward(g, &mut up, &xn, &l.up_proj, None, n, c, f)?;
            k::swiglu_forward(g, &mut act, &gate, &up, n * f)?;
            k::linear_forward(g, &mut o, &act, &l.down_proj, None, n, f, c)?;
            k::residual_forward(g, &mut x, &o, &x2, n * c)?;
        }
        Ok(x)
    }

    fn head(&self, g: &Gpu, hidden: &Buf, m: usize, logits: &mut Buf) -> Result<()> {
        let cfg = &self.config;
        let c = cfg.hidden_size;
        let (mut normed, mut rr) = (g.alloc(m * c)?, g.alloc(m)?);
        k::rmsnorm_forward(
            g,
            &mut normed,
            &mut rr,
            hidden,
            &self.weights.norm,
            m,
            c,
            cfg.rms_norm_eps,
        )?;
        k::linear_forward(
            g,
            logits,
            &normed,
            self.weights.head(),
            None,
            m,
            c,
            cfg.vocab_size,
        )
    }
}
