//! `pgsrm score`: the log-probability of every token of a text under a model, as JSON.

use anyhow::{Result, bail};
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::model::spec::load_model;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a checkpoint folder, a .gguf file, a Hugging Face name in the local cache,
    /// smollm2-135m-instruct, or random:<config>[:seed]
    #[arg(long)]
    model: String,
    /// Text to score
    #[arg(long)]
    text: String,
    /// Score the text as a user turn written by the model's chat template
    #[arg(long)]
    chat: bool,
    /// Do not put the model's start token in front (the first token then has no log-probability)
    #[arg(long)]
    no_bos: bool,
    /// Backend: auto (a CUDA GPU when present, else the CPU), cpu, cuda, or emu (the emulated
    /// device, which runs the CUDA kernels on the CPU to check them)
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = load_model(&args.model)?;
    let text = if args.chat {
        loaded.chat_prompt(&args.text)?
    } else {
        args.text.clone()
    };
    let ids = loaded.tokenizer.encode(&text)?;
    if ids.is_empty() {
        bail!("--text gives no tokens to score");
    }
    // With a start token every text token is predicted; without, the first one has no context.
    let bos = if args.no_bos { None } else { loaded.bos };
    let mut seq: Vec<u32> = bos.into_iter().collect();
    seq.extend(&ids);
    let offset = seq.len() - ids.len();
    let context = match &loaded.model {
        pgsrm::model::spec::Model::Gpt2(m) => m.config.n_positions,
        pgsrm::model::spec::Model::Llama(m) => m.config.max_position_embeddings,
    };
    if seq.len() > context {
        bail!(
            "--text is {} tokens long, more than the model's context of {context}",
            seq.len()
        );
    }
    let v = loaded.model.vocab_size();
    let runner = Device::open(args.device, 0)?.runner(&loaded.model)?;
    // Row p of the logits predicts token p + 1; the scored tokens are those after the first.
    let logits = runner.next_token_logits(&seq)?;
    let mut logp = vec![0.0f32; logits.len()];
    pgsrm::cpu::ops::log_softmax_forward(&mut logp, &logits, v);
    let mut logprobs: Vec<Option<f32>> = vec![None; ids.len()];
    for p in 0..seq.len() - 1 {
        let target = seq[p + 1] as usize;
        logprobs[p + 1 - offset] = Some(logp[p * v + target]);
    }
    let sum: f32 = logprobs.iter().flatten().sum();
    let out = json!({
        "model": loaded.source,
        "device": runner.device_name(),
        "text": text,
        "tokens": loaded.tokenizer.token_strings(&ids)?,
        "ids": ids,
        "logprobs": logprobs,
        "sum": sum,
        "scored": logprobs.iter().flatten().count(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
