//! GPT-2 on a device, mirroring `cpu::decode::Gpt2Decoder` step for step: layernorm, the fused
//! q|k|v product, the cache append and cached attention, the MLP; decoding itself is
//! `cuda::decode`'s, shared with Llama.

use super::decode::{CachedRows, DeviceModel, KvCache};
use super::device::{DevBuf, Gpu};
use super::ops::{self as k, AttnShape};
use crate::model::gpt2::{Gpt2, Gpt2Config};
use anyhow::Result;

type Buf = DevBuf<f32>;

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
        crate::cpu::decode::check_prompts(&self.config, prompts, max_new, pad)
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
            &self.wte,
            Some(&self.wpe),
            n,
            c,
        )?;
        for (l, p) in self.blocks.iter().enumerate() {
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
            &self.ln_f_w,
            &self.ln_f_b,
            m,
            c,
            cfg.layer_norm_epsilon,
        )?;
        k::matmul_nt_forward(g, logits, &ln, &self.wte, None, m, c, cfg.vocab_size)
    }
}
