//! GPT-2 on a device, mirroring `cpu::gpt2_decode::Gpt2Decoder` step for step: layernorm, the fused
//! q|k|v product, the cache append and cached attention, the MLP; decoding itself is
//! `cuda::decode`'s, shared with Llama.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::decode::{CachedRows, DeviceModel, KvCache};
use crate::cuda::ops::{self as k, AttnShape};
use crate::model::gpt2::{Gpt2, Gpt2Config, Gpt2Weights};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// One transformer block's tensors, as `model::gpt2::Gpt2Block`.
pub struct Block {
    pub ln_1_w: Buf,
    pub ln_1_b: Buf,
    pub attn_w: Buf,
    pub attn_b: Buf,
    pub attn_proj_w: Buf,
    pub attn_proj_b: Buf,
    pub ln_2_w: Buf,
    pub ln_2_b: Buf,
    pub fc_w: Buf,
    pub fc_b: Buf,
    pub fc_proj_w: Buf,
    pub fc_proj_b: Buf,
}

/// All of GPT-2's tensors on the device, in the host's layout: like `Gpt2Weights`, the same
/// struct holds the parameters and their gradients.
pub struct GpuGpt2Weights {
    pub wte: Buf,
    pub wpe: Buf,
    pub blocks: Vec<Block>,
    pub ln_f_w: Buf,
    pub ln_f_b: Buf,
}

impl GpuGpt2Weights {
    /// Tensors of `cfg`'s shapes made by `make(len)`, one after another in `Gpt2Weights::named`
    /// order.
    fn build(cfg: &Gpt2Config, mut make: impl FnMut(usize) -> Result<Buf>) -> Result<Self> {
        let (c, v) = (cfg.n_embd, cfg.vocab_size);
        let wte = make(v * c)?;
        let wpe = make(cfg.n_positions * c)?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for _ in 0..cfg.n_layer {
            blocks.push(Block {
                ln_1_w: make(c)?,
                ln_1_b: make(c)?,
                attn_w: make(c * 3 * c)?,
                attn_b: make(3 * c)?,
                attn_proj_w: make(c * c)?,
                attn_proj_b: make(c)?,
                ln_2_w: make(c)?,
                ln_2_b: make(c)?,
                fc_w: make(c * 4 * c)?,
                fc_b: make(4 * c)?,
                fc_proj_w: make(4 * c * c)?,
                fc_proj_b: make(c)?,
            });
        }
        Ok(GpuGpt2Weights {
            wte,
            wpe,
            blocks,
            ln_f_w: make(c)?,
            ln_f_b: make(c)?,
        })
    }

    pub fn upload(g: &Gpu, cfg: &Gpt2Config, w: &Gpt2Weights) -> Result<Self> {
        let mut host = w.named().into_iter();
        Self::build(cfg, |n| match host.next() {
            Some((_, t)) if t.numel() == n => g.upload(&t.data),
            Some((name, t)) => bail!("{name} holds {} values, the config needs {n}", t.numel()),
            None => bail!("the weights hold fewer tensors than the config needs"),
        })
    }

    /// Zeros of every tensor (gradients to add into).
    pub fn zeros(g: &Gpu, cfg: &Gpt2Config) -> Result<Self> {
        Self::build(cfg, |n| g.zeros(n))
    }

    /// Every tensor in `Gpt2Weights::named` order.
    pub fn list(&self) -> Vec<&Buf> {
        let mut out = vec![&self.wte, &self.wpe];
        for b in &self.blocks {
            out.extend([
                &b.ln_1_w,
                &b.ln_1_b,
                &b.attn_w,
                &b.attn_b,
                &b.attn_proj_w,
                &b.attn_proj_b,
                &b.ln_2_w,
                &b.ln_2_b,
                &b.fc_w,
                &b.fc_b,
                &b.fc_proj_w,
                &b.fc_proj_b,
            ]);
        }
        out.extend([&self.ln_f_w, &self.ln_f_b]);
        out
    }

    /// Every tensor in `Gpt2Weights::named` order, to write into (an optimiser step).
    pub fn list_mut(&mut self) -> Vec<&mut Buf> {
        let mut out = vec![&mut self.wte, &mut self.wpe];
        for b in &mut self.blocks {
            out.extend([
                &mut b.ln_1_w,
                &mut b.ln_1_b,
                &mut b.attn_w,
                &mut b.attn_b,
                &mut b.attn_proj_w,
                &mut b.attn_proj_b,
                &mut b.ln_2_w,
                &mut b.ln_2_b,
                &mut b.fc_w,
                &mut b.fc_b,
                &mut b.fc_proj_w,
                &mut b.fc_proj_b,
            ]);
        }
        out.extend([&mut self.ln_f_w, &mut self.ln_f_b]);
        out
    }

    /// The tensors on the host.
    pub fn download(&self, g: &Gpu, cfg: &Gpt2Config) -> Result<Gpt2Weights> {
        let mut w = Gpt2Weights::zeros(cfg);
        for ((_, t), b) in w.named_mut().into_iter().zip(self.list()) {
            t.data = g.download(b)?;
        }
        Ok(w)
    }
}

/// GPT-2 on the device: its config and parameters.
pub struct GpuGpt2 {
    pub config: Gpt2Config,
    pub weights: GpuGpt2Weights,
}

impl GpuGpt2 {
    pub fn upload(g: &Gpu, m: &Gpt2) -> Result<Self> {
        Ok(GpuGpt2 {
            config: m.config.clone(),
            weights: GpuGpt2Weights::upload(g, &m.config, &m.weights)?,
        })
    }
}

impl DeviceModel for GpuGpt2 {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn hidden_size(&self) -> usize {
        self.config.n_embd
    }

    fn n_layer(&self) -> usize {
        self.config.n_layer
    }

    fn kv_width(&self) -> usize {
        self.config.n_embd
    }

    fn check_prompts(&self, prompts: &[Vec<u32>], max_new: usize, pad: u32) -> Result<()> {
        crate::batch::check_prompts(
            prompts,
            max_new,
            pad,
            self.config.n_positions,
            self.config.vocab_size,
        )
    }

    fn forward_cached(&self, g: &Gpu, rows: &CachedRows, cache: &mut KvCache) -> Result<Buf> {
        let cfg = &self.config;
        let (c, n) = (cfg.n_embd, rows.b * rows.tq);
        let eps = cfg.layer_norm_epsilon;
        let shape = AttnShape {
            b: rows.b,
            t: rows.tq,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_head,
            head_dim: cfg.head_dim(),
        };
        let buf = |width: usize| g.alloc::<f32>(n * width);
        let (mut x, mut x2, mut ln, mut tmp, mut atty) =
            (buf(c)?, buf(c)?, buf(c)?, buf(c)?, buf(c)?);
        let (mut mean, mut rstd) = (buf(1)?, buf(1)?);
        let (mut qkv, mut fch, mut fch_gelu) = (buf(3 * c)?, buf(4 * c)?, buf(4 * c)?);
        k::embedding_forward(
            g,
            &mut x,
            rows.ids,
            rows.pos,
            &self.weights.wte,
            Some(&self.weights.wpe),
            n,
            c,
        )?;
        for (l, p) in self.weights.blocks.iter().enumerate() {
            k::layernorm_forward(
                g, &mut ln, &mut mean, &mut rstd, &x, &p.ln_1_w, &p.ln_1_b, n, c, eps,
            )?;
            k::matmul_forward(g, &mut qkv, &ln, &p.attn_w, Some(&p.attn_b), n, c, 3 * c)?;
            k::kv_append(
                g,
                &mut cache.k[l],
                &mut cache.v[l],
                (&qkv, c, 3 * c),
                (&qkv, 2 * c, 3 * c),
                rows.p0,
                rows.b,
                rows.tq,
                cache.tmax,
                c,
            )?;
            k::attention_cached_forward(
                g,
                &mut atty,
                (&qkv, 0, 3 * c),
                &cache.k[l],
                &cache.v[l],
                rows.start,
                rows.p0,
                rows.tq,
                cache.tmax,
                shape,
            )?;
            k::matmul_forward(
                g,
                &mut tmp,
                &atty,
                &p.attn_proj_w,
                Some(&p.attn_proj_b),
                n,
                c,
                c,
            )?;
            k::residual_forward(g, &mut x2, &x, &tmp, n * c)?;
            std::mem::swap(&mut x, &mut x2);
            k::layernorm_forward(
                g, &mut ln, &mut mean, &mut rstd, &x, &p.ln_2_w, &p.ln_2_b, n, c, eps,
            )?;
            k::matmul_forward(g, &mut fch, &ln, &p.fc_w, Some(&p.fc_b), n, c, 4 * c)?;
            k::gelu_tanh_forward(g, &mut fch_gelu, &fch, n * 4 * c)?;
            k::matmul_forward(
                g,
                &mut tmp,
                &fch_gelu,
                &p.fc_proj_w,
                Some(&p.fc_proj_b),
                n,
                4 * c,
                c,
            )?;
            k::residual_forward(g, &mut x2, &x, &tmp, n * c)?;
            std::mem::swap(&mut x, &mut x2);
        }
        Ok(x)
    }

    fn head(&self, g: &Gpu, hidden: &Buf, m: usize, logits: &mut Buf) -> Result<()> {
        let cfg = &self.config;
        let c = cfg.n_embd;
        let (mut ln, mut mean, mut rstd) = (g.alloc(m * c)?, g.alloc(m)?, g.alloc(m)?);
        k::layernorm_forward(
            g,
            &mut ln,
            &mut mean,
            &mut rstd,
            hidden,
            &self.weights.ln_f_w,
            &self.weights.ln_f_b,
            m,
            c,
            cfg.layer_norm_epsilon,
        )?;
        k::linear_forward(
            g,
            logits,
            &ln,
            &self.weights.wte,
            None,
            m,
            c,
            cfg.vocab_size,
        )
    }
}
