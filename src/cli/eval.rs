//! `pgsrm eval`: greedy decoding on a task's held-out prompts, scored against the parent.

use crate::cli::embedder_args::EmbedderArgs;
use anyhow::{Context, Result, bail};
use pgsrm::device::Device;
use pgsrm::files::write_atomic;
use pgsrm::model::spec::load_model;
use pgsrm::run::eval::evaluate;
use pgsrm::run::folder::{CONFIG, latest_checkpoint};
use pgsrm::run::report::EVAL;
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A run folder: its newest checkpoint on its task (the result is also saved as eval.json)
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    run: Option<PathBuf>,
    /// A model instead of a run: folder, .gguf, Hugging Face name, smollm2-135m-instruct, random:<config>
    #[arg(long, requires = "task")]
    model: Option<String>,
    /// Task of --model (colors, opposites, categories, copy, negative)
    #[arg(long)]
    task: Option<String>,
    /// Give --model the prompts as user turns of its chat template
    #[arg(long)]
    chat: bool,
    /// Most new tokens per answer (default: the run's, else the task's)
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Examples to show
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    embedder: EmbedderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let (model, task, chat, max_new, save_to) = match (&args.run, &args.model) {
        (Some(run), None) => {
            let cp = run.join(CONFIG);
            let text = std::fs::read_to_string(&cp).with_context(|| {
                format!("--run {}: cannot read {}", run.display(), cp.display())
            })?;
            let cfg: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not valid JSON", cp.display()))?;
            let task = cfg["task"]
                .as_str()
                .with_context(|| format!("{}: no \"task\"", cp.display()))?
                .to_string();
            let model = match latest_checkpoint(run)? {
                Some((_, dir)) => dir.display().to_string(),
                None => cfg["model"]
                    .as_str()
                    .with_context(|| format!("{}: no checkpoint and no \"model\"", cp.display()))?
                    .to_string(),
            };
            let chat = cfg["chat"].as_bool().unwrap_or(false);
            let max_new = cfg["max_new_tokens"].as_u64().map(|n| n as usize);
            (model, task, chat, max_new, Some(run.join(EVAL)))
        }
        (None, Some(m)) => {
            let task = args.task.clone().context("--model needs --task")?;
            (m.clone(), task, args.chat, None, None)
        }
        _ => bail!("give --run DIR, or --model M with --task T"),
    };
    let task = pgsrm::tasks::by_name(&task)?;
    let max_new = args
        .max_new_tokens
        .or(max_new)
        .unwrap_or(task.settings.max_new_tokens);
    if max_new == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let loaded = load_model(&model)?;
    let device = Device::open(args.embedder.device, 0)?;
    let embedder = args.embedder.build_on(&device)?;
    let result = evaluate(
        &loaded,
        &task,
        chat,
        max_new,
        Some(embedder.as_ref()),
        args.examples,
        &device,
    )?;
    if let Some(p) = &save_to {
        write_atomic(p, serde_json::to_string_pretty(&result)?.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "{} on {} held-out prompts of {} ({}): exact match {:.3}, mean PGSRM reward {}",
            loaded.source,
            result["n"],
            task.name,
            result["device"].as_str().unwrap_or("?"),
            result["exact_match"].as_f64().unwrap_or(f64::NAN),
            result["mean_reward"]
                .as_f64()
                .map(|r| format!("{r:.4}"))
                .unwrap_or_else(|| "n/a".into())
        );
        for e in result["examples"].as_array().into_iter().flatten() {
            println!(
                "  {:?}\n    parent {:?}  child {:?}  reward {}",
                e["prompt"].as_str().unwrap_or(""),
                e["parent"].as_str().unwrap_or(""),
                e["child"].as_str().unwrap_or(""),
                e["reward"]
            );
        }
    }
    Ok(())
}
