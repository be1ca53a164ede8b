//! A Llama-family model's parameters on a device, in the host's layout (projections (out, in), as
//! `linear_forward` takes them), with the rotary tables: what `llama_decode` and `llama_train` run.

use crate::cuda::device::{DevBuf, Gpu};
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
