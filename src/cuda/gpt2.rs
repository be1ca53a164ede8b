//! GPT-2 inference on the GPU, mirroring `cpu::decode::Gpt2Decoder` step for step: the prompts are
//! prefilled into a KV cache in one pass, then each step feeds one token per row; only each row's
//! last position goes through the final layernorm and the head. Sampling runs on the device too,
//! so a decoding step copies B tokens and B log-probabilities back, not B x V logits.

use super::decode::{DeviceDecoder, generate_rows, sample_rows};
use super::device::Gpu;
use super::ops::{self as k, AttnShape};
use crate::cpu::gpt2::Batch;
use crate::model::gpt2::{Gpt2, Gpt2Config};
use crate::sample::Generation;
use crate::sample::SamplingParams;
use anyhow::{Result, bail};
use cudarc::driver::CudaSlice;

type Buf = CudaSlice<f32>;

struct Block {
    ln_1_w: Buf,
    ln_1_b: Buf,
    attn_w: Buf,
    attn_b: Buf,
    attn_proj_w: Buf,
    attn_proj_b: Buf,
    ln_2_w: Buf,
    ln_2_b: Buf,
    fc_w: Buf,
    fc_b: Buf,
    fc_proj_w: Buf,
    fc_proj_b: Buf,
}

/// GPT-2's parameters on the device, in the same layout as on the host.
pub struct GpuGpt2 {
    pub config: Gpt2Config,
    wte: Buf,
    wpe: Buf,
    blocks: Vec<Block>,
    ln_f_w: Buf,
    ln_f_b: Buf,
}

impl GpuGpt2 {
    pub fn upload(g: &Gpu, m: &Gpt2) -> Result<Self> {
        let w = &m.weights;
        let mut blocks = Vec::with_capacity(w.blocks.len());
        for b in &w.blocks {
            blocks.push(Block {
                ln_1_w: g.upload(&b.ln_1_w.data)?,
                ln_1_b: g.upload(&b.ln_1_b.data)?,
                attn_w: g.upload(&b.attn_w.data)?,
                attn_b: g.upload(&b.attn_b.data)?,
                attn_proj_w: g.upload(&b.attn_proj_w.data)?,
                attn_proj_b: g.upload(&b.attn_proj_b.data)?,
                ln_2_w: g.upload(&b.ln_2_w.data)?,
                ln_2_b: g.upload(&b.ln_2_b.data)?,
                fc_w: g.upload(&b.fc_w.data)?,
                fc_b: g.upload(&b.fc_b.data)?,
                fc_proj_w: g.upload(&b.fc_proj_w.data)?,
                fc_proj_b: g.upload(&b.fc_proj_b.data)?,
            });
        }
        Ok(GpuGpt2 {
            config: m.config.clone(),
            wte: g.upload(&w.wte.data)?,
            wpe: g.upload(&w.wpe.data)?,
            blocks,
            ln_f_w: g.upload(&w.ln_f_w.data)?,
            ln_f_b: g.upload(&w.ln_f_b.data)?,
        })
    }
}

/// Activation buffers for up to `n` rows at a time.
struct Scratch {
    n: usize,
    x: Buf,
    x2: Buf,
    ln: Buf,
    mean: Buf,
    rstd: Buf,
    qkv: Buf,
    atty: Buf,
    tmp: Buf,
    fch: Buf,
    fch_gelu: Buf,
}

impl Scratch {
    fn new(g: &Gpu, n: usize, c: usize) -> Result<Self> {
        Ok(Scratch {
            n,
            x: g.zeros(n * c)?,
            x2: g.zeros(n * c)?,
            ln: g.zeros(n * c)?,
            mean: g.zeros(n)?,
            rstd: g.zeros(n)?,
            qkv: g.zeros(n * 3 * c)?,
            atty: g.zeros(n * c)?,
            tmp: g.zeros(n * c)?,
            fch: g.zeros(n * 4 * c)?,
            fch_gelu: g.zeros(n * 4 * c)?,
        })
    }
}

/// The decoding state of a batch on the device.
pub struct GpuGpt2Decoder<'m> {
    g: &'m Gpu,
    model: &'m GpuGpt2,
    b: usize,
    tmax: usize,
    start: Vec<usize>,
    start_dev: CudaSlice<i32>,
    len: usize,
    k: Vec<Buf>,
    v: Vec<Buf>,
    s: Scratch,
    last: Buf,
    last_ln: Buf,
    logits: Buf,
}

impl<'m> GpuGpt2Decoder<'m> {
    /// Prefills the prompts (left padded with `pad`); `logits()` then holds every row's next-token logits.
    pub fn new(
        g: &'m Gpu,
        model: &'m GpuGpt2,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        pad: u32,
    ) -> Result<Self> {
        let cfg = &model.config;
        crate::cpu::decode::check_prompts(cfg, prompts, max_new_tokens, pad)?;
        let batch = Batch::left_padded(prompts, pad)?;
        let (c, v) = (cfg.n_embd, cfg.vocab_size);
        let tmax = batch.t + max_new_tokens;
        let start_i: Vec<i32> = batch.start.iter().map(|&s| s as i32).collect();
        let mut d = GpuGpt2Decoder {
            g,
            model,
            b: batch.b,
            tmax,
            start: batch.start.clone(),
            start_dev: g.upload(&start_i)?,
            len: 0,
            k: (0..cfg.n_layer)
                .map(|_| g.zeros(batch.b * tmax * c))
                .collect::<Result<_>>()?,
            v: (0..cfg.n_layer)
                .map(|_| g.zeros(batch.b * tmax * c))
                .collect::<Result<_>>()?,
            s: Scratch::new(g, batch.b * batch.t, c)?,
            last: g.zeros(batch.b * c)?,
            last_ln: g.zeros(batch.b * c)?,
            logits: g.zeros(batch.b * v)?,
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
        let (nb, c, v) = (self.b, cfg.n_embd, cfg.vocab_size);
        let n = nb * tq;
        if n > self.s.n {
            bail!("{n} rows exceed the decoder's scratch of {}", self.s.n);
        }
        let p0 = self.len;
        let pos: Vec<i32> = (0..n)
            .map(|i| (p0 + i % tq).saturating_sub(self.start[i / tq]) as i32)
            .collect();
        let eps = cfg.layer_norm_epsilon;
        let shape = AttnShape {
            b: nb,
            t: tq,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_head,
            head_dim: cfg.head_dim(),
        };
        let ids = g.upload(tokens)?;
        let pos = g.upload(&pos)?;
        let s = &mut self.s;
        k::embedding_forward(
            g,
            &mut s.x,
            &ids,
            &pos,
            &self.model.wte,
            Some(&self.model.wpe),
            n,
            c,
        )?;
        for (l, p) in self.model.blocks.iter().enumerate() {
            k::layernorm_forward(
                g,
                &mut s.ln,
                &mut s.mean,
                &mut s.rstd,
                &s.x,
                &p.ln_1_w,
                &p.ln_1_b,
                n,
                c,
                eps,
            )?;
            k::matmul_forward(
                g,
                &mut s.qkv,
                &s.ln,
                &p.attn_w,
                Some(&p.attn_b),
                n,
                c,
                3 * c,
            )?;
            k::kv_append(
                g,
                &mut self.k[l],
                &mut self.v[l],
                (&s.qkv, c, 3 * c),
                (&s.qkv, 2 * c, 3 * c),
                p0,
                nb,
                tq,
                self.tmax,
                c,
            )?;
            k::attention_cached_forward(
                g,
                &mut s.atty,
                (&s.qkv, 0, 3 * c),
                &self.k[l],
                &self.v[l],
                &self.start_dev,
                p0,
                tq,
                self.tmax,
                shape,
            )?;
            k::matmul_forward(
                g,
                &mut s.tmp,
                &s.atty,
                &p.attn_proj_w,
                Some(&p.attn_proj_b),
                n,
                c,
                c,
            )?;
            k::residual_forward(g, &mut s.x2, &s.x, &s.tmp, n * c)?;
            std::mem::swap(&mut s.x, &mut s.x2);
            k::layernorm_forward(
                g,
                &mut s.ln,
                &mut s.mean,
                &mut s.rstd,
                &s.x,
                &p.ln_2_w,
                &p.ln_2_b,
                n,
                c,
                eps,
            )?;
            k::matmul_forward(g, &mut s.fch, &s.ln, &p.fc_w, Some(&p.fc_b), n, c, 4 * c)?;
            k::gelu_tanh_forward(g, &mut s.fch_gelu, &s.fch, n * 4 * c)?;
            k::matmul_forward(
                g,
                &mut s.tmp,
                &s.fch_gelu,
                &p.fc_proj_w,
                Some(&p.fc_proj_b),
                n,
                4 * c,
                c,
            )?;
            k::residual_forward(g, &mut s.x2, &s.x, &s.tmp, n * c)?;
            std::mem::swap(&mut s.x, &mut s.x2);
        }
        // Only each row's last position needs the final layernorm and the head.
        let rows: Vec<i32> = (0..nb).map(|b| (b * tq + tq - 1) as i32).collect();
        let rows = g.upload(&rows)?;
        let mut mean = g.zeros::<f32>(nb)?;
        let mut rstd = g.zeros::<f32>(nb)?;
        k::logits_forward_rows(g, &mut self.last, &s.x, &rows, nb, c)?;
        k::layernorm_forward(
            g,
            &mut self.last_ln,
            &mut mean,
            &mut rstd,
            &self.last,
            &self.model.ln_f_w,
            &self.model.ln_f_b,
            nb,
            c,
            eps,
        )?;
        k::matmul_nt_forward(
            g,
            &mut self.logits,
            &self.last_ln,
            &self.model.wte,
            None,
            nb,
            c,
            v,
        )?;
        self.len += tq;
        Ok(())
    }
}

impl DeviceDecoder for GpuGpt2Decoder<'_> {
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
        GpuGpt2Decoder::step(self, tokens)
    }
}

/// `cpu::decode::generate` on the device: every prompt continued together, sampling on the device
/// with a counter-based generator keyed by (seed, row, step), so the same seed gives the same tokens.
pub fn generate(
    g: &Gpu,
    model: &GpuGpt2,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    seed: u64,
) -> Result<Vec<Generation>> {
    generate_rows(prompts.len(), params, eos, seed, || {
        GpuGpt2Decoder::new(g, model, prompts, params.max_new_tokens, eos)
    })
}
