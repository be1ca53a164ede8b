//! Held-out evaluation: greedy answers to a task's held-out prompts, scored against the parent's
//! reference answers by exact match (strip + lower-case) and by the PGSRM reward.

use crate::device::Device;
use crate::model::spec::{Loaded, Model};
use crate::reward::Embedder;
use crate::reward::shaping::{DEFAULT_POWER, Shaping, binary, rewards};
use crate::sample::SamplingParams;
use crate::tasks::Task;
use anyhow::{Result, bail};
use serde_json::{Value, json};

/// Prompts decoded together; bounds the KV cache's memory on the larger tasks.
const CHUNK: usize = 32;

/// The text the child is given for a task prompt: the prompt itself, or, with `chat`, the prompt
/// as a user turn of the model's chat template.
pub fn child_prompt(loaded: &Loaded, prompt: &str, chat: bool) -> Result<String> {
    if chat {
        loaded.chat_prompt(prompt)
    } else {
        Ok(prompt.to_string())
    }
}

/// The token put before each prompt, as training does: a Llama-family child's start token; none
/// for GPT-2, whose reference code feeds the prompt alone.
pub fn start_token(loaded: &Loaded) -> Option<u32> {
    match loaded.model {
        Model::Llama(_) => loaded.bos,
        Model::Gpt2(_) => None,
    }
}

/// The child's answer text: the sampled tokens up to the end token, decoded.
pub fn answer_text(loaded: &Loaded, tokens: &[u32]) -> Result<String> {
    let body: Vec<u32> = tokens
        .iter()
        .copied()
        .take_while(|&t| t != loaded.eos)
        .collect();
    loaded.tokenizer.decode(&body)
}

/// Greedy decoding on every held-out prompt of `task`. The JSON has `exact_match` (share of
/// answers equal to the parent's), `mean_reward` (PGSRM shaping through `embedder`, null without
/// one), `n`, and the first `examples` (prompt, parent, child, reward).
pub fn evaluate(
    loaded: &Loaded,
    task: &Task,
    chat: bool,
    max_new_tokens: usize,
    embedder: Option<&dyn Embedder>,
    examples: usize,
    device: &Device,
) -> Result<Value> {
    let held = task.held_out();
    if held.is_empty() {
        bail!("task {} has no held-out prompts", task.name);
    }
    let params = SamplingParams::greedy(max_new_tokens);
    let runner = device.runner(&loaded.model)?;
    let mut children = Vec::with_capacity(held.len());
    for chunk in held.chunks(CHUNK) {
        let mut prompts = Vec::with_capacity(chunk.len());
        for ex in chunk {
            let mut ids: Vec<u32> = start_token(loaded).into_iter().collect();
            ids.extend(
                loaded
                    .tokenizer
                    .encode(&child_prompt(loaded, ex.prompt, chat)?)?,
            );
            prompts.push(ids);
        }
        // Greedy decoding draws no random numbers: the seed does not matter.
        let gens = runner.generate(&prompts, &params, loaded.eos, 0)?;
        for g in &gens {
            children.push(answer_text(loaded, &g.tokens)?);
        }
    }
    let parents: Vec<&str> = held.iter().map(|e| e.answer).collect();
    let kids: Vec<&str> = children.iter().map(String::as_str).collect();
    let exact: Vec<f32> = parents
        .iter()
        .zip(&kids)
        .map(|(p, c)| binary(p, c))
        .collect();
    let shaped = match embedder {
        Some(e) => Some(rewards(
            Some(e),
            Shaping::Pgsrm,
            DEFAULT_POWER,
            &parents,
            &kids,
        )?),
        None => None,
    };
    let n = held.len();
    let exact_match = exact.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let mean_reward = shaped
        .as_ref()
        .map(|r| r.iter().map(|&x| x as f64).sum::<f64>() / n as f64);
    let ex: Vec<Value> = (0..n.min(examples))
        .map(|i| {
            json!({
                "prompt": held[i].prompt,
                "parent": parents[i],
                "child": kids[i],
                "exact": exact[i] == 1.0,
                "reward": shaped.as_ref().map(|r| r[i]),
            })
        })
        .collect();
    Ok(json!({
        "task": task.name,
        "model": loaded.source,
        "n": n,
        "exact_match": exact_match,
        "mean_reward": mean_reward,
        "reward": "pgsrm",
        "embedder": embedder.map(|e| e.name()),
        "max_new_tokens": max_new_tokens,
        "chat": chat,
        "device": runner.device_name(),
        "examples": ex,
    }))
}
