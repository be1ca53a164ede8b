//! Rows of whole passes: GPT-2 and Llama decoding (prefill and steps) and seeded generation
//! against the CPU decoders, and the BERT encoder's reward against the CPU's pooling and shaping.

use super::table::{CheckRow, Checker, TOL, randn};
use crate::cuda::ops as k;
use anyhow::Result;

pub(super) fn run_all(ck: &mut Checker) -> Result<()> {
    let small = ck.small();
    gpt2_decoding(ck, "tiny")?;
    if !small {
        gpt2_decoding(ck, "small")?;
    }
    llama_decoding(ck, "tiny GQA", TINY_LLAMA)?;
    bert_reward(ck)?;
    if !small {
        llama_decoding(
            ck,
            "SmolLM2-135M shapes",
            crate::model::llama::SMOLLM2_135M_CONFIG,
        )?;
    } else {
        llama_decoding(ck, "SmolLM2-135M widths, 2 layers", SMOLLM2_WIDTHS)?;
    }
    Ok(())
}

/// GPT-2 with a seeded random init: the logits of the prefill and of two decoding steps against
/// `cpu::gpt2_decode::Gpt2Decoder`, and a seeded generation (its tokens and log-probabilities must
/// come out the same on both runs).
fn gpt2_decoding(ck: &mut Checker, config: &str) -> Result<()> {
    use crate::cpu::gpt2_decode::Gpt2Decoder;
    use crate::cuda::model::decode::Decoder;
    use crate::cuda::model::generate::generate;
    use crate::cuda::model::gpt2::GpuGpt2;
    let cfg = crate::model::gpt2::Gpt2Config::named(config)?;
    let model = crate::model::gpt2::Gpt2::random(cfg.clone(), ck.rng.next_u64());
    let v = cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = [5, 12, 20]
        .iter()
        .map(|&n| (0..n).map(|_| ck.rng.below(v) as u32).collect())
        .collect();
    let forced: Vec<Vec<u32>> = (0..2)
        .map(|_| (0..prompts.len()).map(|_| ck.rng.below(v) as u32).collect())
        .collect();
    let eos = cfg.eos_token_id;
    let mut cpu = Gpt2Decoder::new(&model, &prompts, 4, eos)?;
    let mut want = vec![cpu.logits().to_vec()];
    for next in &forced {
        cpu.step(next)?;
        want.push(cpu.logits().to_vec());
    }
    let dev = GpuGpt2::upload(ck.g, &model)?;
    ck.cases(
        &[
            ("gpt2 decode (prefill)", format!("{config} B=3 T=20")),
            ("gpt2 decode (step)", format!("{config} B=3 step 1")),
            ("gpt2 decode (step)", format!("{config} B=3 step 2")),
        ],
        &[&want[0], &want[1], &want[2]],
        TOL,
        |g| {
            let mut d = Decoder::new(g, &dev, &prompts, 4, eos)?;
            let mut out = vec![d.logits()?];
            for next in &forced {
                d.step(next)?;
                out.push(d.logits()?);
            }
            Ok(out)
        },
    )?;
    let params = crate::sample::SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens: 8,
    };
    if !ck.wants("gpt2 generate") {
        return Ok(());
    }
    let (runs, same) = ck.under_schedules(|g| {
        let rows = generate(g, &dev, &prompts, &params, eos, 42)?;
        Ok(rows
            .iter()
            .map(|r| {
                r.tokens
                    .iter()
                    .map(|&t| t as f32)
                    .chain(r.logprobs.iter().copied())
                    .collect()
            })
            .collect())
    })?;
    let ok = same && runs.iter().all(|r| !r.is_empty());
    ck.rows.push(CheckRow {
        kernel: "gpt2 generate, seeded, twice".into(),
        shape: format!("{config} B=3 new=8"),
        max_abs: if ok { 0.0 } else { 1.0 },
        max_rel: if ok { 0.0 } else { 1.0 },
        tol: 0.0,
        same_bits: same,
        pass: ok,
        seconds: 0.0,
    });
    Ok(())
}

/// A small Llama with grouped-query attention (6 query heads over 2 key/value heads) and an
/// untied head.
pub(super) const TINY_LLAMA: &str = r#"{"vocab_size": 500, "hidden_size": 96, "intermediate_size": 160, "num_hidden_layers": 2,
    "num_attention_heads": 6, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "max_position_embeddings": 128}"#;

/// SmolLM2-135M's widths, heads and vocabulary with 2 of its 30 layers: the emulated device's
/// stand-in for the whole model (the same shapes through every kernel, a fifteenth of the work).
const SMOLLM2_WIDTHS: &str = r#"{"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 2, "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0, "tie_word_embeddings": true, "max_position_embeddings": 8192}"#;

/// A seeded random Llama of `config` (SmolLM2's shapes included: its weights cannot travel to a
/// machine without network, and the code path is the same): the logits of the prefill and of two
/// decoding steps with the same forced tokens, device against `cpu::llama::generate_with`.
fn llama_decoding(ck: &mut Checker, name: &str, config: &str) -> Result<()> {
    use crate::cuda::model::decode::Decoder;
    use crate::cuda::model::llama::GpuLlama;
    use crate::model::llama::{Llama, LlamaConfig};
    let cfg = LlamaConfig::from_json_str(config)?;
    let model = Llama::random(cfg.clone(), ck.rng.next_u64());
    let v = cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = [4, 9, 16]
        .iter()
        .map(|&n| (0..n).map(|_| ck.rng.below(v) as u32).collect())
        .collect();
    let steps = 2;
    let forced: Vec<Vec<u32>> = (0..steps)
        .map(|_| (0..prompts.len()).map(|_| ck.rng.below(v) as u32).collect())
        .collect();
    // CPU: the logits each row sees at each step, with the forced tokens fed back.
    let batch = crate::batch::Batch::left_padded(&prompts, 0)?;
    let mut seen: Vec<Vec<f32>> = vec![Vec::new(); steps + 1];
    let mut calls = 0usize;
    crate::cpu::llama::generate_with(&model, &batch, steps + 1, None, |r, logits| {
        let step = calls / prompts.len();
        calls += 1;
        seen[step].extend_from_slice(logits);
        if step < steps { forced[step][r] } else { 0 }
    })?;
    let dev = GpuLlama::upload(ck.g, &model)?;
    ck.cases(
        &[
            ("llama decode (prefill)", format!("{name} B=3 T=16")),
            ("llama decode (step)", format!("{name} B=3 step 1")),
            ("llama decode (step)", format!("{name} B=3 step 2")),
        ],
        &[&seen[0], &seen[1], &seen[2]],
        TOL,
        |g| {
            let mut d = Decoder::new(g, &dev, &prompts, steps + 1, 0)?;
            let mut out = vec![d.logits()?];
            for next in &forced {
                d.step(next)?;
                out.push(d.logits()?);
            }
            Ok(out)
        },
    )
}

/// all-MiniLM-L6-v2's shapes (its weights stay behind on a machine without network; a seeded
/// random init takes the same code path).
const MINILM_CONFIG: &str = r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
    "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
    "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}"#;

/// The encoder's last hidden state and the fused PGSRM reward on the device against
/// `cpu::bert::bert_forward`, `sentence_pool_forward` and `reward::shaping`, on five packed answers.
fn bert_reward(ck: &mut Checker) -> Result<()> {
    use crate::batch::EncoderInput;
    use crate::cpu::bert::{bert_forward, sentence_pool_forward};
    use crate::model::bert::{BertConfig, BertLayer, BertWeights, Pooling};
    use crate::reward::shaping::Shaping;
    let cfg: BertConfig = serde_json::from_str(MINILM_CONFIG)?;
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let rng = &mut ck.rng;
    let mut normal = |n: usize, std: f32| randn(rng, n, std);
    let ones = |n: usize| vec![1.0f32; n];
    let layers = (0..cfg.num_hidden_layers)
        .map(|_| BertLayer {
            qkv_w: normal(c * 3 * c, 0.05),
            qkv_b: normal(3 * c, 0.02),
            attn_out_w: normal(c * c, 0.05),
            attn_out_b: normal(c, 0.02),
            attn_ln_w: ones(c),
            attn_ln_b: vec![0.0; c],
            ffn_in_w: normal(c * i, 0.05),
            ffn_in_b: normal(i, 0.02),
            ffn_out_w: normal(i * c, 0.05),
            ffn_out_b: normal(c, 0.02),
            ffn_ln_w: ones(c),
            ffn_ln_b: vec![0.0; c],
        })
        .collect();
    let w = BertWeights {
        word_emb: normal(cfg.vocab_size * c, 0.05),
        pos_emb: normal(cfg.max_position_embeddings * c, 0.05),
        type_emb: normal(cfg.type_vocab_size * c, 0.05),
        emb_ln_w: ones(c),
        emb_ln_b: vec![0.0; c],
        layers,
    };
    let mut input = EncoderInput::new();
    for len in [3usize, 8, 5, 4, 6] {
        let ids: Vec<u32> = (0..len)
            .map(|_| ck.rng.below(cfg.vocab_size) as u32)
            .collect();
        input.push(&ids, &vec![0; len]);
    }
    let b = input.batch();
    let parents = randn(&mut ck.rng, b * c, 1.0);
    let want_hidden = bert_forward(&cfg, &w, &input)?;
    let mut pooled = vec![0.0; b * c];
    sentence_pool_forward(&mut pooled, &want_hidden, &input, c, Pooling::Mean, true);
    let mut want: Vec<f32> = (0..b)
        .map(|j| {
            Shaping::Pgsrm.reward(
                4.0,
                "",
                "",
                &parents[j * c..(j + 1) * c],
                &pooled[j * c..(j + 1) * c],
            )
        })
        .collect();
    want.extend(&pooled);
    let dev = crate::cuda::model::bert::GpuBert::upload(ck.g, &cfg, &w)?;
    ck.cases(
        &[
            (
                "bert forward (MiniLM shapes)",
                format!("B={b} N={}", input.rows()),
            ),
            ("bert + fused pgsrm reward", format!("B={b} D={c}")),
        ],
        &[&want_hidden, &want],
        TOL,
        |g| {
            let hidden = dev.forward(g, &input)?;
            g.sync()?;
            let (r, e) = dev.rewards(g, &input, &parents, &vec![0; b], k::SHAPE_PGSRM, 4.0)?;
            let mut got = r;
            got.extend(e);
            Ok(vec![g.download(&hidden)?, got])
        },
    )
}
