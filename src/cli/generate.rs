//! `pgsrm generate`: sample continuations of a prompt.

use anyhow::{Result, bail};
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::model::spec::load_model;
use pgsrm::sample::SamplingParams;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a checkpoint folder, a .gguf file, a Hugging Face name in the local cache,
    /// smollm2-135m-instruct, or random:<config>[:seed]
    #[arg(long)]
    model: String,
    /// Prompt to continue
    #[arg(long)]
    prompt: String,
    /// Write the prompt as a user turn with the model's chat template
    #[arg(long)]
    chat: bool,
    /// Most new tokens per sample
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: all)
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: all)
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Samples of the prompt, decoded together
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Seed of the sampler: the same seed gives the same tokens on the same backend (the CPU and
    /// a device draw from different generators, so only greedy decoding agrees across them)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Backend: auto (a CUDA GPU when present, else the CPU), cpu, cuda, or emu (the emulated
    /// device, which runs the CUDA kernels on the CPU to check them)
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Print JSON (tokens, ids and log-probabilities) instead of the texts
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!(
            "--temperature must be a number >= 0, got {}",
            args.temperature
        );
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {}", args.top_p);
    }
    if args.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    let loaded = load_model(&args.model)?;
    let text = if args.chat {
        loaded.chat_prompt(&args.prompt)?
    } else {
        args.prompt.clone()
    };
    let mut prompt: Vec<u32> = loaded.bos.into_iter().collect();
    prompt.extend(loaded.tokenizer.encode(&text)?);
    if prompt.is_empty() {
        bail!("--prompt gives no tokens; give some text (or a model with a start token)");
    }
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
    };
    let prompts = vec![prompt; args.num_samples];
    let runner = Device::open(args.device, 0)?.runner(&loaded.model)?;
    let gens = runner.generate(&prompts, &params, loaded.eos, args.seed)?;
    let mut samples = Vec::new();
    for g in &gens {
        // The end token is kept in `tokens` (with its log-probability) but not in the text.
        let body: Vec<u32> = g
            .tokens
            .iter()
            .copied()
            .filter(|&t| t != loaded.eos)
            .collect();
        let completion = loaded.tokenizer.decode(&body)?;
        if args.json {
            samples.push(json!({"completion": completion, "ids": g.tokens, "logprobs": g.logprobs, "sum": g.logprobs.iter().sum::<f32>()}));
        } else {
            println!(
                "{}{}",
                if args.num_samples > 1 { "---\n" } else { "" },
                completion
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"model": loaded.source, "device": runner.device_name(), "prompt": text, "seed": args.seed, "samples": samples})
            )?
        );
    }
    Ok(())
}
