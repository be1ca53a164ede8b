//! GPT-2's forward through a KV cache on a device, mirroring `cpu::gpt2_decode::Gpt2Decoder` step
//! for step: layernorm, the fused q|k|v product, the cache append and cached attention, the MLP;
//! the final norm and the tied head at the picked rows. Decoding itself is `cuda::model::decode`'s,
//! shared with Llama; a recorded rollout also copies each activation `gpt2_train` keeps.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::decode::{COPIES_PER_LAYER, CachedRows, DeviceModel, KvCache, Recording};
use crate::cuda::model::gpt2::GpuGpt2;
use crate::cuda::model::gpt2_train::Gpt2Activations;
use crate::cuda::ops::{self as k, AttnShape};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// The buffers of GPT-2's forward through the cache, for some number of rows N.
pub struct Gpt2Workspace {
    x: Buf,        // (N, C) the residual stream
    x2: Buf,       // (N, C) after a block's attention
    ln: Buf,       // (N, C)
    tmp: Buf,      // (N, C) a branch's output before the residual add
    atty: Buf,     // (N, C)
    mean: Buf,     // (N)
    rstd: Buf,     // (N)
    qkv: Buf,      // (N, 3C)
    fch: Buf,      // (N, 4C)
    fch_gelu: Buf, // (N, 4C)
}

impl DeviceModel for GpuGpt2 {
    type Workspace = Gpt2Workspace;
    type Record = Box<Gpt2Activations>;

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

    fn workspace(&self, g: &Gpu, rows: usize) -> Result<Gpt2Workspace> {
        let c = self.config.n_embd;
        let buf = |width: usize| g.alloc::<f32>(rows * width);
        Ok(Gpt2Workspace {
            x: buf(c)?,
            x2: buf(c)?,
            ln: buf(c)?,
            tmp: buf(c)?,
            atty: buf(c)?,
            mean: buf(1)?,
            rstd: buf(1)?,
            qkv: buf(3 * c)?,
            fch: buf(4 * c)?,
            fch_gelu: buf(4 * c)?,
        })
    }

    fn recording(&self, g: &Gpu, b: usize, t: usize, m: usize) -> Result<Self::Record> {
        Ok(Box::new(Gpt2Activations::new(g, &self.config, b, t, m)?))
    }

    fn forward_cached(
        &self,
        g: &Gpu,
        rows: &CachedRows,
        cache: &mut KvCache,
        w: &mut Gpt2Workspace,
        mut rec: Option<Recording<Self::Record>>,
    ) -> Result<()> {
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
        k::embedding_forward(
            g,
            &mut w.x,
            rows.ids,
            rows.pos,
            &self.weights.wte,
            Some(&self.weights.wpe),
            n,
            c,
        )?;
        // A recording copies the run rows of the workspace to their rows of the activations
        // twice a layer, once its inputs (the residual stream before it is replaced) and the
        // attention's are ready and once the MLP's are, and after the last layer.
        let slot = |l: usize, i: usize| l * COPIES_PER_LAYER + i;
        for (l, p) in self.weights.blocks.iter().enumerate() {
            k::layernorm_forward(
                g,
                &mut w.ln,
                &mut w.mean,
                &mut w.rstd,
                &w.x,
                &p.ln_1_w,
                &p.ln_1_b,
                n,
                c,
                eps,
            )?;
            k::matmul_forward(
                g,
                &mut w.qkv,
                &w.ln,
                &p.attn_w,
                Some(&p.attn_b),
                n,
                c,
                3 * c,
            )?;
            let mut att = None;
            if let Some(r) = &mut rec {
                let (before, rest) = r.acts.blocks.split_at_mut(l);
                let a = &mut rest[0];
                let input = before
                    .last_mut()
                    .map_or(&mut r.acts.encoded, |b| &mut b.res2);
                let copies = &mut [
                    (input, &w.x, c),
                    (&mut a.ln1, &w.ln, c),
                    (&mut a.ln1_mean, &w.mean, 1),
                    (&mut a.ln1_rstd, &w.rstd, 1),
                    (&mut a.qkv, &w.qkv, 3 * c),
                ];
                k::scatter_rows_list(g, &mut r.copies[slot(l, 0)], copies, r.rows, n)?;
                att = Some(&mut a.att);
            }
            k::kv_append(
                g,
                &mut cache.k[l],
                &mut cache.v[l],
                (&w.qkv, c, 3 * c),
                (&w.qkv, 2 * c, 3 * c),
                rows.p0,
                rows.b,
                rows.tq,
                cache.tmax,
                c,
            )?;
            k::attention_cached_forward(
                g,
                &mut w.atty,
                att,
                (&w.qkv, 0, 3 * c),
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
                &mut w.tmp,
                &w.atty,
                &p.attn_proj_w,
                Some(&p.attn_proj_b),
                n,
                c,
                c,
            )?;
            k::residual_forward(g, &mut w.x2, &w.x, &w.tmp, n * c)?;
            k::layernorm_forward(
                g,
                &mut w.ln,
                &mut w.mean,
                &mut w.rstd,
                &w.x2,
                &p.ln_2_w,
                &p.ln_2_b,
                n,
                c,
                eps,
            )?;
            k::matmul_forward(g, &mut w.fch, &w.ln, &p.fc_w, Some(&p.fc_b), n, c, 4 * c)?;
            k::gelu_tanh_forward(g, &mut w.fch_gelu, &w.fch, n * 4 * c)?;
            if let Some(r) = &mut rec {
                let a = &mut r.acts.blocks[l];
                let copies = &mut [
                    (&mut a.atty, &w.atty, c),
                    (&mut a.res1, &w.x2, c),
                    (&mut a.ln2, &w.ln, c),
                    (&mut a.ln2_mean, &w.mean, 1),
                    (&mut a.ln2_rstd, &w.rstd, 1),
                    (&mut a.fch, &w.fch, 4 * c),
                    (&mut a.fch_gelu, &w.fch_gelu, 4 * c),
                ];
                k::scatter_rows_list(g, &mut r.copies[slot(l, 1)], copies, r.rows, n)?;
            }
            k::matmul_forward(
                g,
                &mut w.tmp,
                &w.fch_gelu,
                &p.fc_proj_w,
                Some(&p.fc_proj_b),
                n,
                4 * c,
                c,
            )?;
            k::residual_forward(g, &mut w.x, &w.x2, &w.tmp, n * c)?;
        }
        if let Some(r) = &mut rec {
            let layers = self.weights.blocks.len();
            let last = r
                .acts
                .blocks
                .last_mut()
                .map_or(&mut r.acts.encoded, |b| &mut b.res2);
            let copies = &mut [(last, &w.x, c)];
            k::scatter_rows_list(g, &mut r.copies[slot(layers, 0)], copies, r.rows, n)?;
        }
        Ok(())
    }

    fn head(
        &self,
        g: &Gpu,
        w: &mut Gpt2Workspace,
        picked: &DevBuf<i32>,
        m: usize,
        logits: &mut Buf,
    ) -> Result<()> {
        let cfg = &self.config;
        let c = cfg.n_embd;
        // The picked rows' hidden states and their norm go to buffers the layers are done with.
        k::logits_forward_rows(g, &mut w.tmp, &w.x, picked, m, c)?;
        k::layernorm_forward(
            g,
            &mut w.ln,
            &mut w.mean,
            &mut w.rstd,
            &w.tmp,
            &self.weights.ln_f_w,
            &self.weights.ln_f_b,
            m,
            c,
            cfg.layer_norm_epsilon,
        )?;
        k::linear_forward(
            g,
            logits,
            &w.ln,
            &self.weights.wte,
            None,
            m,
            c,
            cfg.vocab_size,
        )
    }
}
