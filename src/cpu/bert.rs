//! BERT encoder forward on the CPU, and the sentence pooling that follows it.
//!
//! Sequences travel as row ranges of one matrix (`EncoderInput`): packed back to back, every
//! per-token product (projections, feed-forward, layernorm) runs once over all real tokens of the
//! batch with no padding, and only attention looks at sequence boundaries. A padded layout with an
//! attention mask goes through the same code (used to compare with Hugging Face's padded outputs).

use crate::batch::EncoderInput;
use crate::cpu::ops::{
    encoder_attention_forward, gelu_tanh_forward, layernorm_forward, matmul_forward,
};
use crate::model::bert::{Activation, BertConfig, BertWeights, Pooling, SentenceModel};
use crate::reward::embedder::{EncoderBackend, EncoderPasses};
use anyhow::{Result, ensure};
use rayon::prelude::*;

const ROWS_PER_TASK: usize = 32;

/// out (N, C) = layernorm(inp) row by row, in parallel over blocks of rows.
fn layernorm_rows(out: &mut [f32], inp: &[f32], w: &[f32], b: &[f32], c: usize, eps: f32) {
    out.par_chunks_mut(ROWS_PER_TASK * c)
        .zip(inp.par_chunks(ROWS_PER_TASK * c))
        .for_each_init(
            || (vec![0.0; ROWS_PER_TASK], vec![0.0; ROWS_PER_TASK]),
            |(mean, rstd), (o, x)| {
                let n = x.len() / c;
                layernorm_forward(o, mean, rstd, x, w, b, n, c, eps);
            },
        );
}

/// out (N) = 0.5 x (1 + erf(x / sqrt 2)), with erf as a rational function (Eigen's and XLA's f32
/// erf: at most 5e-7 from the exact value, inputs clamped to [-4, 4] where erf is +-1 in f32).
/// `ops::gelu_erf_forward` calls libm's scalar, branchy `erff`, which took a fifth of the
/// encoder's time on short texts; this form has no branches and vectorises.
fn gelu_erf_rational_forward(out: &mut [f32], inp: &[f32]) {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.9546e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    for (o, &x) in out.iter_mut().zip(inp) {
        let z = (x * std::f32::consts::FRAC_1_SQRT_2).clamp(-4.0, 4.0);
        let z2 = z * z;
        let mut p = A[0];
        for a in &A[1..] {
            p = p * z2 + a;
        }
        let mut q = B[0];
        for b in &B[1..] {
            q = q * z2 + b;
        }
        *o = 0.5 * x * (1.0 + z * p / q);
    }
}

/// x (N, C) += r (N, C)
fn add_rows(x: &mut [f32], r: &[f32]) {
    for (a, b) in x.iter_mut().zip(r) {
        *a += b;
    }
}

/// hidden (N, C) = word_emb[ids] + pos_emb[position in sequence] + type_emb[type ids], then
/// layernorm. Errors on an id outside its table or a sequence longer than the position table.
pub fn bert_embeddings_forward(
    hidden: &mut [f32],
    config: &BertConfig,
    w: &BertWeights,
    input: &EncoderInput,
) -> Result<()> {
    let c = config.hidden_size;
    let mut sum = vec![0.0f32; input.rows() * c];
    for s in 0..input.batch() {
        let (a, b) = (input.starts[s], input.starts[s + 1]);
        ensure!(
            b - a <= config.max_position_embeddings,
            "sequence {s} has {} tokens; the model takes at most {}",
            b - a,
            config.max_position_embeddings
        );
        for r in a..b {
            let id = input.input_ids[r] as usize;
            let tt = input.token_type_ids[r] as usize;
            ensure!(
                id < config.vocab_size,
                "token id {id} is outside the vocabulary ({})",
                config.vocab_size
            );
            ensure!(
                tt < config.type_vocab_size,
                "token type id {tt} is outside the type vocabulary ({})",
                config.type_vocab_size
            );
            let p = r - a;
            let o = &mut sum[r * c..(r + 1) * c];
            let we = &w.word_emb[id * c..(id + 1) * c];
            let pe = &w.pos_emb[p * c..(p + 1) * c];
            let te = &w.type_emb[tt * c..(tt + 1) * c];
            for j in 0..c {
                o[j] = we[j] + pe[j] + te[j];
            }
        }
    }
    layernorm_rows(
        hidden,
        &sum,
        &w.emb_ln_w,
        &w.emb_ln_b,
        c,
        config.layer_norm_eps,
    );
    Ok(())
}

/// hidden (N, C) = the encoder's last hidden state for every row of `input`.
pub fn bert_forward(
    config: &BertConfig,
    w: &BertWeights,
    input: &EncoderInput,
) -> Result<Vec<f32>> {
    ensure!(
        input.starts.len() >= 2
            && input.starts[0] == 0
            && *input.starts.last().unwrap() == input.rows()
            && input.token_type_ids.len() == input.rows()
            && input.mask.len() == input.rows(),
        "encoder input is inconsistent: {} ids, {} type ids, {} mask entries, starts {:?}",
        input.rows(),
        input.token_type_ids.len(),
        input.mask.len(),
        input.starts
    );
    let n = input.rows();
    let c = config.hidden_size;
    let inter = config.intermediate_size;
    let eps = config.layer_norm_eps;
    let act = config.activation()?;

    let mut x = vec![0.0f32; n * c];
    bert_embeddings_forward(&mut x, config, w, input)?;
    // Scratch reused by every layer.
    let mut qkv = vec![0.0f32; n * 3 * c];
    let mut att = vec![0.0f32; n * c];
    let mut h = vec![0.0f32; n * c];
    let mut ff = vec![0.0f32; n * inter];
    let mut ff_act = vec![0.0f32; n * inter];

    for l in &w.layers {
        matmul_forward(&mut qkv, &x, &l.qkv_w, Some(&l.qkv_b), n, c, 3 * c);
        encoder_attention_forward(
            &mut att,
            &qkv,
            &input.mask,
            &input.starts,
            c,
            config.num_attention_heads,
        );
        matmul_forward(&mut h, &att, &l.attn_out_w, Some(&l.attn_out_b), n, c, c);
        add_rows(&mut h, &x);
        layernorm_rows(&mut x, &h, &l.attn_ln_w, &l.attn_ln_b, c, eps);

        matmul_forward(&mut ff, &x, &l.ffn_in_w, Some(&l.ffn_in_b), n, c, inter);
        ff_act
            .par_chunks_mut(ROWS_PER_TASK * inter)
            .zip(ff.par_chunks(ROWS_PER_TASK * inter))
            .for_each(|(o, i)| match act {
                Activation::GeluErf => gelu_erf_rational_forward(o, i),
                Activation::GeluTanh => gelu_tanh_forward(o, i),
            });
        matmul_forward(
            &mut h,
            &ff_act,
            &l.ffn_out_w,
            Some(&l.ffn_out_b),
            n,
            inter,
            c,
        );
        add_rows(&mut h, &x);
        layernorm_rows(&mut x, &h, &l.ffn_ln_w, &l.ffn_ln_b, c, eps);
    }
    Ok(x)
}

/// out (B, C) = pooled rows of each sequence of `input` (only rows whose mask is set), then
/// L2-normalised when `normalize`; hidden (N, C). A sequence with no real row pools to zeros.
pub fn sentence_pool_forward(
    out: &mut [f32],
    hidden: &[f32],
    input: &EncoderInput,
    c: usize,
    pooling: Pooling,
    normalize: bool,
) {
    for s in 0..input.batch() {
        let o = &mut out[s * c..(s + 1) * c];
        let rows = (input.starts[s]..input.starts[s + 1]).filter(|&r| input.mask[r]);
        match pooling {
            Pooling::Cls => {
                o.fill(0.0);
                if let Some(r) = rows.clone().next() {
                    o.copy_from_slice(&hidden[r * c..(r + 1) * c]);
                }
            }
            Pooling::Max => {
                let mut count = 0usize;
                o.fill(f32::NEG_INFINITY);
                for r in rows {
                    for (a, &b) in o.iter_mut().zip(&hidden[r * c..(r + 1) * c]) {
                        *a = a.max(b);
                    }
                    count += 1;
                }
                if count == 0 {
                    o.fill(0.0);
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let mut count = 0usize;
                o.fill(0.0);
                for r in rows {
                    add_rows(o, &hidden[r * c..(r + 1) * c]);
                    count += 1;
                }
                if count > 0 {
                    let div = match pooling {
                        Pooling::Mean => count as f32,
                        _ => (count as f32).sqrt(),
                    };
                    for a in o.iter_mut() {
                        *a /= div;
                    }
                }
            }
        }
        if normalize {
            // sentence-transformers divides by max(norm, 1e-12), so a zero vector stays zero.
            let norm = o.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            for a in o.iter_mut() {
                *a /= norm;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gelu_erf_rational_forward;
    use crate::cpu::ops::gelu_erf_forward;

    #[test]
    fn rational_gelu_matches_libm_gelu() {
        let x: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        let mut fast = vec![0.0; x.len()];
        let mut exact = vec![0.0; x.len()];
        gelu_erf_rational_forward(&mut fast, &x);
        gelu_erf_forward(&mut exact, &x);
        for ((a, b), xi) in fast.iter().zip(&exact).zip(&x) {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + xi.abs()),
                "x={xi}: {a} vs {b}"
            );
        }
    }
}

/// The CPU's sentence-encoder passes: `bert_forward`, then `sentence_pool_forward` as the model's
/// folder says. Also its own backend: the passes read the loaded model's weights in place.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuEncoder;

impl EncoderPasses for CpuEncoder {
    fn pooled(&self, model: &SentenceModel, input: &EncoderInput) -> Result<Vec<f32>> {
        let c = model.config.hidden_size;
        let hidden = bert_forward(&model.config, &model.weights, input)?;
        let mut pooled = vec![0.0f32; input.batch() * c];
        sentence_pool_forward(
            &mut pooled,
            &hidden,
            input,
            c,
            model.sentence.pooling,
            model.sentence.normalize,
        );
        Ok(pooled)
    }

    fn device_name(&self) -> Option<String> {
        None
    }
}

impl EncoderBackend for CpuEncoder {
    fn passes(&self, _model: &SentenceModel) -> Result<Box<dyn EncoderPasses>> {
        Ok(Box::new(CpuEncoder))
    }
}
