//! A Llama's forward through a KV cache on a device, mirroring `cpu::llama`'s cached decoding step
//! for step: RMSNorm, q/k/v projections, rotary embeddings from the same f32 tables,
//! grouped-query attention over the cache, the SiLU-gated MLP; the final norm and the head at the
//! picked rows. Decoding itself is `cuda::model::decode`'s, shared with GPT-2; a recorded rollout
//! also copies each activation `llama_train` keeps.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::decode::{COPIES_PER_LAYER, CachedRows, DeviceModel, KvCache, Recording};
use crate::cuda::model::llama::GpuLlama;
use crate::cuda::model::llama_train::LlamaActivations;
use crate::cuda::ops::{self as k, AttnShape};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// The buffers of a Llama's forward through the cache, for some number of rows N.
pub struct LlamaWorkspace {
    x: Buf,    // (N, C) the residual stream
    x2: Buf,   // (N, C) after a layer's attention
    xn: Buf,   // (N, C) normed
    o: Buf,    // (N, C) a branch's output before the residual add
    rrms: Buf, // (N)
    q: Buf,    // (N, H D)
    ao: Buf,   // (N, H D)
    k: Buf,    // (N, KV D)
    v: Buf,    // (N, KV D)
    gate: Buf, // (N, F)
    up: Buf,   // (N, F)
    act: Buf,  // (N, F)
}

impl DeviceModel for GpuLlama {
    type Workspace = LlamaWorkspace;
    type Record = Box<LlamaActivations>;

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

    fn workspace(&self, g: &Gpu, rows: usize) -> Result<LlamaWorkspace> {
        let cfg = &self.config;
        let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
        let (qw, kw) = (
            cfg.num_attention_heads * cfg.head_dim(),
            cfg.n_kv_heads() * cfg.head_dim(),
        );
        let buf = |width: usize| g.alloc::<f32>(rows * width);
        Ok(LlamaWorkspace {
            x: buf(c)?,
            x2: buf(c)?,
            xn: buf(c)?,
            o: buf(c)?,
            rrms: buf(1)?,
            q: buf(qw)?,
            ao: buf(qw)?,
            k: buf(kw)?,
            v: buf(kw)?,
            gate: buf(f)?,
            up: buf(f)?,
            act: buf(f)?,
        })
    }

    fn recording(&self, g: &Gpu, b: usize, t: usize, m: usize) -> Result<Self::Record> {
        Ok(Box::new(LlamaActivations::new(g, &self.config, b, t, m)?))
    }

    fn forward_cached(
        &self,
        g: &Gpu,
        rows: &CachedRows,
        cache: &mut KvCache,
        w: &mut LlamaWorkspace,
        mut rec: Option<Recording<Self::Record>>,
    ) -> Result<()> {
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
        k::embedding_forward(
            g,
            &mut w.x,
            rows.ids,
            rows.pos,
            &self.weights.embed_tokens,
            None,
            n,
            c,
        )?;
        // A recording copies the run rows of the workspace to their rows of the activations
        // twice a layer, once its input and the attention's inputs are ready and once the MLP's
        // are, and after the last layer.
        let slot = |l: usize, i: usize| l * COPIES_PER_LAYER + i;
        for (li, l) in self.weights.layers.iter().enumerate() {
            k::rmsnorm_forward(
                g,
                &mut w.xn,
                &mut w.rrms,
                &w.x,
                &l.input_layernorm,
                n,
                c,
                eps,
            )?;
            k::linear_forward(g, &mut w.q, &w.xn, &l.q_proj, None, n, c, qw)?;
            k::linear_forward(g, &mut w.k, &w.xn, &l.k_proj, None, n, c, kw)?;
            k::linear_forward(g, &mut w.v, &w.xn, &l.v_proj, None, n, c, kw)?;
            k::rope_forward(g, &mut w.q, 0, qw, rows.pos, &self.cos, &self.sin, n, h, d)?;
            k::rope_forward(g, &mut w.k, 0, kw, rows.pos, &self.cos, &self.sin, n, kv, d)?;
            let mut att = None;
            if let Some(r) = &mut rec {
                let a = &mut r.acts.layers[li];
                let copies = &mut [
                    (&mut a.x, &w.x, c),
                    (&mut a.rstd1, &w.rrms, 1),
                    (&mut a.xn1, &w.xn, c),
                    (&mut a.q, &w.q, qw),
                    (&mut a.k, &w.k, kw),
                    (&mut a.v, &w.v, kw),
                ];
                k::scatter_rows_list(g, &mut r.copies[slot(li, 0)], copies, r.rows, n)?;
                att = Some(&mut a.att);
            }
            k::kv_append(
                g,
                &mut cache.k[li],
                &mut cache.v[li],
                (&w.k, 0, kw),
                (&w.v, 0, kw),
                rows.p0,
                rows.b,
                rows.tq,
                cache.tmax,
                kw,
            )?;
            k::attention_cached_forward(
                g,
                &mut w.ao,
                att,
                (&w.q, 0, qw),
                &cache.k[li],
                &cache.v[li],
                rows.start,
                rows.p0,
                rows.tq,
                cache.tmax,
                shape,
            )?;
            k::linear_forward(g, &mut w.o, &w.ao, &l.o_proj, None, n, qw, c)?;
            k::residual_forward(g, &mut w.x2, &w.o, &w.x, n * c)?;
            k::rmsnorm_forward(
                g,
                &mut w.xn,
                &mut w.rrms,
                &w.x2,
                &l.post_attention_layernorm,
                n,
                c,
                eps,
            )?;
            k::linear_forward(g, &mut w.gate, &w.xn, &l.gate_proj, None, n, c, f)?;
            k::linear_forward(g, &mut w.up, &w.xn, &l.up_proj, None, n, c, f)?;
            k::swiglu_forward(g, &mut w.act, &w.gate, &w.up, n * f)?;
            if let Some(r) = &mut rec {
                let a = &mut r.acts.layers[li];
                let copies = &mut [
                    (&mut a.ao, &w.ao, qw),
                    (&mut a.x2, &w.x2, c),
                    (&mut a.rstd2, &w.rrms, 1),
                    (&mut a.xn2, &w.xn, c),
                    (&mut a.gate, &w.gate, f),
                    (&mut a.up, &w.up, f),
                    (&mut a.act, &w.act, f),
                ];
                k::scatter_rows_list(g, &mut r.copies[slot(li, 1)], copies, r.rows, n)?;
            }
            k::linear_forward(g, &mut w.o, &w.act, &l.down_proj, None, n, f, c)?;
            k::residual_forward(g, &mut w.x, &w.o, &w.x2, n * c)?;
        }
        if let Some(r) = &mut rec {
            let layers = self.weights.layers.len();
            let copies = &mut [(&mut r.acts.xl, &w.x, c)];
            k::scatter_rows_list(g, &mut r.copies[slot(layers, 0)], copies, r.rows, n)?;
        }
        Ok(())
    }

    fn head(
        &self,
        g: &Gpu,
        w: &mut LlamaWorkspace,
        picked: &DevBuf<i32>,
        m: usize,
        logits: &mut Buf,
    ) -> Result<()> {
        let cfg = &self.config;
        let c = cfg.hidden_size;
        // The picked rows' hidden states and their norm go to buffers the layers are done with.
        k::logits_forward_rows(g, &mut w.o, &w.x, picked, m, c)?;
        k::rmsnorm_forward(
            g,
            &mut w.xn,
            &mut w.rrms,
            &w.o,
            &self.weights.norm,
            m,
            c,
            cfg.rms_norm_eps,
        )?;
        k::linear_forward(
            g,
            logits,
            &w.xn,
            self.weights.head(),
            None,
            m,
            c,
            cfg.vocab_size,
        )
    }
}
