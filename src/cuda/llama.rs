//! Llama-family inference on the GPU, mirroring `cpu::llama`'s cached decoding step for step:
//! RMSNorm, q/k/v projections (weights (out, in), as `linear_forward` takes them), rotary
//! embeddings from the same f32 tables, grouped-query attention over the KV cache, the SiLU-gated
//! MLP; the final norm and the head only at each row's last new position.

use super::decode::{DeviceDecoder, generate_rows, sample_rows};
use super::device::Gpu;
use super::ops::{self as k, AttnShape};
use crate::cpu::gpt2::Batch;
use crate::cpu::ops::rope_table;
use crate::model::llama::{Llama, LlamaConfig};
use crate::sample::Generation;
use crate::sample::SamplingParams;
use anyhow::{Result, bail};
use cudarc::driver::CudaSlice;

type Buf = CudaSlice<f32>;

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
        Ok(GpuLlama {
            config: m.config.clone(),
            embed_tokens: g.upload(&w.embed_tokens.data)?,
            layers,
            norm: g.upload(&w.norm.data)?,
            lm_head: w.lm_head.as_ref().map(|t| g.upload(&t.data)).transpose()?,
        })
    }

    fn head(&self) -> &Buf {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }
}

/// The decoding state of a batch on the device.
pub struct GpuLlamaDecoder<'m> {
    g: &'m Gpu,
    model: &'m GpuLlama,
    b: usize,
    tmax: usize,
    start: Vec<usize>,
    start_dev: CudaSlice<i32>,
    cos: Buf,
    sin: Buf,
    len: usize,
    k: Vec<Buf>,
    v: Vec<Buf>,
    rows: usize,
    logits: Buf,
}

impl<'m> GpuLlamaDecoder<'m> {
    /// Prefills the prompts (left padded with `pad`); `logits()` then holds every row's next-token logits.
    pub fn new(
        g: &'m Gpu,
        model: &'m GpuLlama,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        pad: u32,
    ) -> Result<Self> {
        let cfg = &model.config;
        let batch = Batch::left_padded(prompts, pad)?;
        if batch.t + max_new_tokens > cfg.max_position_embeddings {
            bail!(
                "prompts of {} tokens with {max_new_tokens} new tokens exceed the model's context of {}",
                batch.t,
                cfg.max_position_embeddings
            );
        }
        if let Some(&bad) = batch.tokens.iter().find(|&&x| x as usize >= cfg.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                cfg.vocab_size
            );
        }
        let tmax = batch.t + max_new_tokens;
        let kw = cfg.n_kv_heads() * cfg.head_dim();
        let (cos, sin) = rope_table(tmax.max(1), cfg.head_dim(), cfg.rope_theta);
        let start_i: Vec<i32> = batch.start.iter().map(|&s| s as i32).collect();
        let mut d = GpuLlamaDecoder {
            g,
            model,
            b: batch.b,
            tmax,
            start: batch.start.clone(),
            start_dev: g.upload(&start_i)?,
            cos: g.upload(&cos)?,
            sin: g.upload(&sin)?,
            len: 0,
            k: (0..cfg.num_hidden_layers)
                .map(|_| g.zeros(batch.b * tmax * kw))
                .collect::<Result<_>>()?,
            v: (0..cfg.num_hidden_layers)
                .map(|_| g.zeros(batch.b * tmax * kw))
                .collect::<Result<_>>()?,
            rows: batch.b * batch.t,
            logits: g.zeros(batch.b * cfg.vocab_size)?,
        };
        d.run(&batch.tokens, batch.t)?;
        Ok(d)
    }

    /// Next-token logits (B, V) after the last position fed, copied to the host.
    pub fn logits(&self) -> Result<Vec<f32>> {
        self.g.download(&self.logits)
    }

    /// Feeds one token per row (B).
    pub fn step(&mut self, tokens: &[u32]) -> Result<()> {
        crate::cpu::decode::check_step(
            tokens,
            self.b,
            self.len,
            self.tmax,
            self.model.config.vocab_size,
        )?;
        self.run(tokens, 1)
    }

    fn run(&mut self, tokens: &[u32], tq: usize) -> Result<()> {
        let g = self.g;
        let cfg = &self.model.config;
        let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
        let (qw, kw) = (h * d, kv * d);
        let nb = self.b;
        let n = nb * tq;
        if n > self.rows {
            bail!("{n} rows exceed the decoder's {} rows", self.rows);
        }
        let p0 = self.len;
        let pos: Vec<i32> = (0..n)
            .map(|i| (p0 + i % tq).saturating_sub(self.start[i / tq]) as i32)
            .collect();
        let pos = g.upload(&pos)?;
        let ids = g.upload(tokens)?;
        let eps = cfg.rms_norm_eps;
        let shape = AttnShape {
            b: nb,
            t: tq,
            n_head: h,
            n_kv_head: kv,
            head_dim: d,
        };
        let mut x = g.zeros::<f32>(n * c)?;
        k::embedding_forward(g, &mut x, &ids, &pos, &self.model.embed_tokens, None, n, c)?;
        let (mut xn, mut rrms) = (g.zeros::<f32>(n * c)?, g.zeros::<f32>(n)?);
        let (mut q, mut kk, mut vv) = (
            g.zeros::<f32>(n * qw)?,
            g.zeros::<f32>(n * kw)?,
            g.zeros::<f32>(n * kw)?,
        );
        let (mut ao, mut o, mut x2) = (
            g.zeros::<f32>(n * qw)?,
            g.zeros::<f32>(n * c)?,
            g.zeros::<f32>(n * c)?,
        );
        let (mut gate, mut up, mut act) = (
            g.zeros::<f32>(n * f)?,
            g.zeros::<f32>(n * f)?,
            g.zeros::<f32>(n * f)?,
        );
        for (li, l) in self.model.layers.iter().enumerate() {
            k::rmsnorm_forward(g, &mut xn, &mut rrms, &x, &l.input_layernorm, n, c, eps)?;
            k::matmul_nt_forward(g, &mut q, &xn, &l.q_proj, None, n, c, qw)?;
            k::matmul_nt_forward(g, &mut kk, &xn, &l.k_proj, None, n, c, kw)?;
            k::matmul_nt_forward(g, &mut vv, &xn, &l.v_proj, None, n, c, kw)?;
            k::rope_forward(g, &mut q, 0, qw, &pos, &self.cos, &self.sin, n, h, d)?;
            k::rope_forward(g, &mut kk, 0, kw, &pos, &self.cos, &self.sin, n, kv, d)?;
            k::kv_append(
                g,
                &mut self.k[li],
                &mut self.v[li],
                (&kk, 0, kw),
                (&vv, 0, kw),
                p0,
                nb,
                tq,
                self.tmax,
                kw,
            )?;
            k::attention_cached_forward(
                g,
                &mut ao,
                (&q, 0, qw),
                &self.k[li],
                &self.v[li],
                &self.start_dev,
                p0,
                tq,
                self.tmax,
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
        // Only each row's last new position needs the final norm and the head.
        let rows: Vec<i32> = (0..nb).map(|b| (b * tq + tq - 1) as i32).collect();
        let rows = g.upload(&rows)?;
        let mut last = g.zeros::<f32>(nb * c)?;
        k::logits_forward_rows(g, &mut last, &x, &rows, nb, c)?;
        let (mut last_n, mut rr) = (g.zeros::<f32>(nb * c)?, g.zeros::<f32>(nb)?);
        k::rmsnorm_forward(g, &mut last_n, &mut rr, &last, &self.model.norm, nb, c, eps)?;
        k::matmul_nt_forward(
            g,
            &mut self.logits,
            &last_n,
            self.model.head(),
            None,
            nb,
            c,
            cfg.vocab_size,
        )?;
        self.len += tq;
        Ok(())
    }
}

impl DeviceDecoder for GpuLlamaDecoder<'_> {
    fn sample(
        &self,
        params: &SamplingParams,
        seed: u64,
        step: u32,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        sample_rows(
            self.g,
            &self.logits,
            self.b,
            self.model.config.vocab_size,
            params,
            seed,
            step,
        )
    }

    fn step(&mut self, tokens: &[u32]) -> Result<()> {
        GpuLlamaDecoder::step(self, tokens)
    }
}

/// `cpu::llama::generate` on the device: every prompt continued together, sampling on the device
/// with a counter-based generator keyed by (seed, row, step), so the same seed gives the same tokens.
pub fn generate(
    g: &Gpu,
    model: &GpuLlama,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    seed: u64,
) -> Result<Vec<Generation>> {
    generate_rows(prompts.len(), params, eos, seed, || {
        GpuLlamaDecoder::new(g, model, prompts, params.max_new_tokens, eos)
    })
}
