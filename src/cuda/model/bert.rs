//! The BERT sentence encoder on the GPU, mirroring `cpu::bert::bert_forward` on the same packed
//! layout (sequences back to back, no padding), and the fused reward: masked mean pool, L2
//! normalise, cosine against the parent's vector and shaping in one launch per batch.

use crate::batch::EncoderInput;
use crate::cuda::device::DevBuf;
use crate::cuda::device::Gpu;
use crate::cuda::ops as k;
use crate::model::bert::SentenceModel;
use crate::model::bert::{Activation, BertConfig, BertWeights};
use crate::reward::embedder::{EncoderBackend, EncoderPasses};
use crate::reward::shaping::Shaping;
use anyhow::{Context, Result, ensure};
use std::sync::Arc;

type Buf = DevBuf<f32>;

struct Layer {
    qkv_w: Buf,
    qkv_b: Buf,
    attn_out_w: Buf,
    attn_out_b: Buf,
    attn_ln_w: Buf,
    attn_ln_b: Buf,
    ffn_in_w: Buf,
    ffn_in_b: Buf,
    ffn_out_w: Buf,
    ffn_out_b: Buf,
    ffn_ln_w: Buf,
    ffn_ln_b: Buf,
}

pub struct GpuBert {
    pub config: BertConfig,
    word_emb: Buf,
    pos_emb: Buf,
    type_emb: Buf,
    emb_ln_w: Buf,
    emb_ln_b: Buf,
    layers: Vec<Layer>,
}

impl GpuBert {
    pub fn upload(g: &Gpu, config: &BertConfig, w: &BertWeights) -> Result<Self> {
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            layers.push(Layer {
                qkv_w: g.upload(&l.qkv_w)?,
                qkv_b: g.upload(&l.qkv_b)?,
                attn_out_w: g.upload(&l.attn_out_w)?,
                attn_out_b: g.upload(&l.attn_out_b)?,
                attn_ln_w: g.upload(&l.attn_ln_w)?,
                attn_ln_b: g.upload(&l.attn_ln_b)?,
                ffn_in_w: g.upload(&l.ffn_in_w)?,
                ffn_in_b: g.upload(&l.ffn_in_b)?,
                ffn_out_w: g.upload(&l.ffn_out_w)?,
                ffn_out_b: g.upload(&l.ffn_out_b)?,
                ffn_ln_w: g.upload(&l.ffn_ln_w)?,
                ffn_ln_b: g.upload(&l.ffn_ln_b)?,
            });
        }
        Ok(GpuBert {
            config: config.clone(),
            word_emb: g.upload(&w.word_emb)?,
            pos_emb: g.upload(&w.pos_emb)?,
            type_emb: g.upload(&w.type_emb)?,
            emb_ln_w: g.upload(&w.emb_ln_w)?,
            emb_ln_b: g.upload(&w.emb_ln_b)?,
            layers,
        })
    }

    /// The last hidden state (N, C) of every row of `input`, left on the device.
    pub fn forward(&self, g: &Gpu, input: &EncoderInput) -> Result<Buf> {
        let cfg = &self.config;
        let (n, c, inter, nh, eps) = (
            input.rows(),
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.layer_norm_eps,
        );
        ensure!(
            input.starts.len() >= 2 && *input.starts.last().unwrap() == n,
            "encoder input is inconsistent"
        );
        let mut pos = Vec::with_capacity(n);
        for s in 0..input.batch() {
            let len = input.starts[s + 1] - input.starts[s];
            ensure!(
                len <= cfg.max_position_embeddings,
                "sequence {s} has {len} tokens; the model takes at most {}",
                cfg.max_position_embeddings
            );
            pos.extend((0..len).map(|p| p as i32));
        }
        ensure!(
            input
                .input_ids
                .iter()
                .all(|&i| (i as usize) < cfg.vocab_size),
            "a token id is outside the vocabulary ({})",
            cfg.vocab_size
        );
        ensure!(
            input
                .token_type_ids
                .iter()
                .all(|&t| (t as usize) < cfg.type_vocab_size),
            "a token type id is outside the type vocabulary"
        );
        let mask: Vec<i32> = input.mask.iter().map(|&m| m as i32).collect();
        let starts: Vec<i32> = input.starts.iter().map(|&s| s as i32).collect();
        let (ids, types, pos, mask, starts) = (
            g.upload(&input.input_ids)?,
            g.upload(&input.token_type_ids)?,
            g.upload(&pos)?,
            g.upload(&mask)?,
            g.upload(&starts)?,
        );
        let mut sum = g.alloc::<f32>(n * c)?;
        let mut x = g.alloc::<f32>(n * c)?;
        let (mut mean, mut rstd) = (g.alloc::<f32>(n)?, g.alloc::<f32>(n)?);
        k::bert_embedding_forward(
            g,
            &mut sum,
            &ids,
            &pos,
            &types,
            &self.word_emb,
            &self.pos_emb,
            &self.type_emb,
            n,
            c,
        )?;
        k::layernorm_forward(
            g,
            &mut x,
            &mut mean,
            &mut rstd,
            &sum,
            &self.emb_ln_w,
            &self.emb_ln_b,
            n,
            c,
            eps,
        )?;
        let mut qkv = g.alloc::<f32>(n * 3 * c)?;
        let (mut att, mut h, mut h2) = (
            g.alloc::<f32>(n * c)?,
            g.alloc::<f32>(n * c)?,
            g.alloc::<f32>(n * c)?,
        );
        let (mut ff, mut ff_act) = (g.alloc::<f32>(n * inter)?, g.alloc::<f32>(n * inter)?);
        for l in &self.layers {
            k::matmul_forward(g, &mut qkv, &x, &l.qkv_w, Some(&l.qkv_b), n, c, 3 * c)?;
            k::encoder_attention_forward(
                g,
                &mut att,
                &qkv,
                &mask,
                &starts,
                input.batch(),
                n,
                c,
                nh,
            )?;
            k::matmul_forward(g, &mut h, &att, &l.attn_out_w, Some(&l.attn_out_b), n, c, c)?;
            k::residual_forward(g, &mut h2, &h, &x, n * c)?;
            k::layernorm_forward(
                g,
                &mut x,
                &mut mean,
                &mut rstd,
                &h2,
                &l.attn_ln_w,
                &l.attn_ln_b,
                n,
                c,
                eps,
            )?;
            k::matmul_forward(g, &mut ff, &x, &l.ffn_in_w, Some(&l.ffn_in_b), n, c, inter)?;
            match cfg.activation()? {
                Activation::GeluErf => k::gelu_erf_forward(g, &mut ff_act, &ff, n * inter)?,
                Activation::GeluTanh => k::gelu_tanh_forward(g, &mut ff_act, &ff, n * inter)?,
            }
            k::matmul_forward(
                g,
                &mut h,
                &ff_act,
                &l.ffn_out_w,
                Some(&l.ffn_out_b),
                n,
                inter,
                c,
            )?;
            k::residual_forward(g, &mut h2, &h, &x, n * c)?;
            k::layernorm_forward(
                g,
                &mut x,
                &mut mean,
                &mut rstd,
                &h2,
                &l.ffn_ln_w,
                &l.ffn_ln_b,
                n,
                c,
                eps,
            )?;
        }
        Ok(x)
    }

    /// Rewards (B) and unit embeddings (B, C) of the answers in `input` against `parents` (B, C),
    /// shaped by the `pool_cosine_shape_forward` code `shaping` (the binary one reads `exact`).
    pub fn rewards(
        &self,
        g: &Gpu,
        input: &EncoderInput,
        parents: &[f32],
        exact: &[i32],
        shaping: i32,
        power: f32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (r, e) = self.shape(g, input, parents, exact, shaping, power)?;
        Ok((g.download(&r)?, g.download(&e)?))
    }

    /// `rewards`, left on the device, so a caller downloads only the half it needs.
    pub fn shape(
        &self,
        g: &Gpu,
        input: &EncoderInput,
        parents: &[f32],
        exact: &[i32],
        shaping: i32,
        power: f32,
    ) -> Result<(Buf, Buf)> {
        let (b, c) = (input.batch(), self.config.hidden_size);
        ensure!(
            parents.len() == b * c && exact.len() == b,
            "{b} answers need {b} parent vectors of {c} and {b} match flags"
        );
        let hidden = self.forward(g, input)?;
        let mask: Vec<i32> = input.mask.iter().map(|&m| m as i32).collect();
        let starts: Vec<i32> = input.starts.iter().map(|&s| s as i32).collect();
        let (mut r, mut e) = (g.alloc::<f32>(b)?, g.alloc::<f32>(b * c)?);
        k::pool_cosine_shape_forward(
            g,
            &mut r,
            &mut e,
            &hidden,
            &g.upload(&mask)?,
            &g.upload(&starts)?,
            &g.upload(parents)?,
            Some(&g.upload(exact)?),
            b,
            c,
            shaping,
            power,
        )?;
        Ok((r, e))
    }
}

/// The fused kernel's code for a shaping that compares embeddings; `None` for `binary`, which
/// compares texts on the host and needs no encoder at all.
pub fn shape_code(shaping: Shaping) -> Option<i32> {
    match shaping {
        Shaping::Pgsrm => Some(k::SHAPE_PGSRM),
        Shaping::Truncate => Some(k::SHAPE_TRUNCATE),
        Shaping::Euclidean => Some(k::SHAPE_EUCLIDEAN),
        Shaping::Binary => None,
    }
}

/// A sentence encoder on a device: the BERT stack, then the fused kernel's masked mean pool and
/// L2 normalisation (its reward output unused). The pooling `sentence-transformers` folders most
/// often name; other poolings stay on the CPU encoder.
pub struct DeviceEncoder {
    gpu: Arc<Gpu>,
    bert: GpuBert,
}

/// The sentence encoders' backend on a device: each loaded encoder's weights go there once.
pub struct DeviceEncoders {
    pub gpu: Arc<Gpu>,
}

impl std::fmt::Debug for DeviceEncoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceEncoders({})", self.gpu.name)
    }
}

impl EncoderBackend for DeviceEncoders {
    fn passes(&self, model: &SentenceModel) -> Result<Box<dyn EncoderPasses>> {
        Ok(Box::new(DeviceEncoder::new(self.gpu.clone(), model)?))
    }
}

impl EncoderPasses for DeviceEncoder {
    fn pooled(&self, _model: &SentenceModel, input: &EncoderInput) -> Result<Vec<f32>> {
        DeviceEncoder::pooled(self, input)
    }

    fn fuses(&self, shaping: Shaping) -> bool {
        shape_code(shaping).is_some()
    }

    fn rewards(
        &self,
        input: &EncoderInput,
        answer: &[usize],
        against: &[f32],
        shaping: Shaping,
        power: f32,
    ) -> Result<Vec<f32>> {
        let code = shape_code(shaping)
            .with_context(|| format!("the device encoder does not shape {shaping:?} rewards"))?;
        DeviceEncoder::rewards(self, input, answer, against, code, power)
    }

    fn device_name(&self) -> Option<String> {
        Some(self.gpu.name.clone())
    }
}

impl DeviceEncoder {
    pub fn new(gpu: Arc<Gpu>, model: &SentenceModel) -> Result<Self> {
        use crate::model::bert::Pooling;
        ensure!(
            model.sentence.pooling == Pooling::Mean && model.sentence.normalize,
            "{}: the device encoder pools by mean and normalises; this model pools by {:?}{}",
            model.dir.display(),
            model.sentence.pooling,
            if model.sentence.normalize {
                ""
            } else {
                " without normalising"
            }
        );
        let bert = GpuBert::upload(&gpu, &model.config, &model.weights)?;
        Ok(DeviceEncoder { gpu, bert })
    }

    /// Unit vectors (B, C) of the packed sequences of `input`.
    pub fn pooled(&self, input: &EncoderInput) -> Result<Vec<f32>> {
        let (b, c) = (input.batch(), self.bert.config.hidden_size);
        let zeros = vec![0.0f32; b * c];
        let (_, e) = self
            .bert
            .shape(&self.gpu, input, &zeros, &vec![0; b], k::SHAPE_PGSRM, 1.0)?;
        self.gpu.download(&e)
    }

    /// Rewards (P) of answer pairs: pair k is the packed sequence `answer[k]` of `input` against
    /// the unit vector `parents[k]` (P, C), shaped by the kernel's code `shaping` (one of
    /// `shape_code`'s). Each sequence goes through the encoder once however many pairs share it,
    /// its hidden rows gathered per pair for the fused kernel; only the rewards come back.
    pub fn rewards(
        &self,
        input: &EncoderInput,
        answer: &[usize],
        parents: &[f32],
        shaping: i32,
        power: f32,
    ) -> Result<Vec<f32>> {
        let (g, p, c) = (&self.gpu, answer.len(), self.bert.config.hidden_size);
        ensure!(
            parents.len() == p * c,
            "{p} pairs need {p} parent vectors of {c}"
        );
        ensure!(
            answer.iter().all(|&s| s < input.batch()),
            "a pair names an answer outside the {} encoded",
            input.batch()
        );
        // Rows of `hidden` each pair pools, back to back, and where each pair's start.
        let (mut rows, mut mask, mut starts) = (Vec::new(), Vec::new(), vec![0i32]);
        for &s in answer {
            for r in input.starts[s]..input.starts[s + 1] {
                rows.push(r as i32);
                mask.push(input.mask[r] as i32);
            }
            starts.push(rows.len() as i32);
        }
        let hidden = self.bert.forward(g, input)?;
        let mut gathered = g.alloc::<f32>(rows.len() * c)?;
        k::logits_forward_rows(g, &mut gathered, &hidden, &g.upload(&rows)?, rows.len(), c)?;
        let (mut r, mut e) = (g.alloc::<f32>(p)?, g.alloc::<f32>(p * c)?);
        k::pool_cosine_shape_forward(
            g,
            &mut r,
            &mut e,
            &gathered,
            &g.upload(&mask)?,
            &g.upload(&starts)?,
            &g.upload(parents)?,
            None,
            p,
            c,
            shaping,
            power,
        )?;
        g.download(&r)
    }
}
