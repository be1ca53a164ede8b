//! Throughput figures shared by the backends: the batched-generation job `pgsrm bench` runs on
//! the CPU and on a GPU, and a median timer.

use crate::model::gpt2::{Gpt2, Gpt2Config};
use crate::rng::Rng;
use crate::sample::SamplingParams;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct GenerateFigure {
    pub config: String,
    pub batch: usize,
    pub prompt: usize,
    pub new_tokens: usize,
    pub runs: usize,
    pub seconds_per_run: f64,
    pub new_tokens_per_s: f64,
}

/// Median seconds of `runs` timed calls after one warm-up.
pub fn median_seconds(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// New tokens per second of batched sampling from a random init of the GPT-2 `config`: `batch`
/// random prompts of `prompt` tokens, `new_tokens` each at temperature 1 (a random init rarely
/// samples the end token, so every row runs all steps). `setup` gets the model once, untimed,
/// and returns the generation to time; it is called with the model, the prompts, the sampling
/// settings, the end token and a fresh seed per run.
pub fn generate_throughput<G>(
    config: &str,
    batch: usize,
    prompt: usize,
    new_tokens: usize,
    runs: usize,
    setup: impl FnOnce(&Gpt2) -> Result<G>,
) -> Result<GenerateFigure>
where
    G: FnMut(&Gpt2, &[Vec<u32>], &SamplingParams, u32, u64) -> Result<()>,
{
    let cfg = Gpt2Config::named(config)?;
    let model = Gpt2::random(cfg.clone(), 1);
    let mut generate = setup(&model)?;
    let mut rng = Rng::new(2);
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..prompt)
                .map(|_| rng.below(cfg.vocab_size - 1) as u32)
                .collect()
        })
        .collect();
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens: new_tokens,
    };
    let mut seed = 0;
    let secs = median_seconds(runs, || {
        seed += 1;
        generate(&model, &prompts, &params, cfg.eos_token_id, seed)
    })?;
    Ok(GenerateFigure {
        config: config.into(),
        batch,
        prompt,
        new_tokens,
        runs,
        seconds_per_run: secs,
        new_tokens_per_s: (batch * new_tokens) as f64 / secs,
    })
}
