//! Llama-family models on a device, mirroring `cpu::llama`'s cached decoding step for step:
//! RMSNorm, q/k/v projections (weights (out, in), as `linear_forward` takes them), rotary
//! embeddings from the same f32 tables, grouped-query attention over the KV cache, the SiLU-gated
//! MLP; the final norm and the head. Decoding itself is `cuda::decode`'s, shared with GPT-2.

use super::decode::{CachedRows, DeviceModel, KvCache};
use super::device::{DevBuf, Gpu};
use super::ops::{self as k, AttnShape};
use crate::cpu::ops::rope_table;
use crate::model::llama::{Llama, LlamaConfig};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

struct Layer {
    input_layernorm: Buf,
    q_proj: Buf,
    k_proj: Buf,
    v_proj: Buf,
    o_proj: Buf,
    post_attention_layernorm: Buf,
    gate_proj: Buf,
    up_proj: Buf,
    down_proj: Buf,
}

/// A Llama model's parameters on the device.
pub struct GpuLlama {
    pub config: LlamaConfig,
    embed_tokens: Buf,
    layers: Vec<Layer>,
    norm: Buf,
    /// The untied head, when the model has one; else `embed_tokens` serves.
    lm_head: Option<Buf>,
    /// The rotary tables (max_position_embeddings, head_dim / 2) of `cpu::ops::rope_table`.
    cos: Buf,
    sin: Buf,
}

impl GpuLlama {
    pub fn upload(g: &Gpu, m: &Llama) -> Result<Self> {
        let w = &m.weights;
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            layers.push(Layer {
                input_layernorm: g.upload(&l.input_layernorm.data)?,
                q_proj: g.upload(&l.q_proj.data)?,
                k_proj: g.upload(&l.k_proj.data)?,
                v_proj: g.upload(&l.v_proj.data)?,
                o_proj: g.upload(&l.o_proj.data)?,
                post_attention_layernorm: g.upload(&l.post_attention_layernorm.data)?,
                gate_proj: g.upload(&l.gate_proj.data)?,
                up_proj: g.upload(&l.up_proj.data)?,
                down_proj: g.upload(&l.down_proj.data)?,
            });
        }
        let cfg = &m.config;
        let (cos, sin) = rope_table(
            cfg.max_position_embeddings.max(1),
            cfg.head_dim(),
            cfg.rope_theta,
        );
        Ok(GpuLlama {
            config: m.config.clone(),
            cos: g.upload(&cos)?,
            sin: g.upload(&sin)?,
            embed_tokens: g.upload(&w.embed_tokens.data)?,
            layers,
            norm: g.upload(&w.norm.data)?,
            lm_head: w.lm_head.as_ref().map(|t| g.upload(&t.data)).transpose()?,
        })
    }

    fn head_weight(&self) -> &Buf {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
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
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if longest + max_new > cfg.max_position_embeddings {
            bail!(
                "prompts of {longest} tokens with {max_new} new tokens exceed the model's context of {}",
                cfg.max_position_embeddings
            );
        }
        let ids = prompts.iter().flatten().chain(std::iter::once(&pad));
        if let Some(&bad) = ids.into_iter().find(|&&x| x as usize >= cfg.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                cfg.vocab_size
            );
        }
        Ok(())
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
            &self.embed_tokens,
            None,
            n,
            c,
        )?;
        for (li, l) in self.layers.iter().enumerate() {
            k::rmsnorm_forward(g, &mut xn, &mut rrms, &x, &l.input_layernorm, n, c, eps)?;
            k::matmul_nt_forward(g, &mut q, &xn, &l.q_proj, None, n, c, qw)?;
            k::matmul_nt_forward(g, &mut kk, &xn, &l.k_proj, None, n, c, kw)?;
            k::matmul_nt_forward(g, &mut vv, &xn, &l.v_proj, None, n, c, kw)?;
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
            k::matmul_nt_forward(g, &mut o, &ao, &l.o_proj, None, n, qw, c)?;
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
            k::matmul_nt_forward(g, &mut gate, &xn, &l.gate_proj, None, n, c, f)?;
            k::matmul_nt_forward(g, &mut up, &xn, &l.up_proj, None, n, c, f)?;
            k::swiglu_forward(g, &mut act, &gate, &up, n * f)?;
            k::matmul_nt_forward(g, &mut o, &act, &l.down_proj, None, n, f, c)?;
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
            &self.norm,
            m,
            c,
            cfg.rms_norm_eps,
        )?;
        k::matmul_nt_forward(
            g,
            logits,
            &normed,
            self.head_weight(),
            None,
            m,
            c,
            cfg.vocab_size,
        )
    }
}
