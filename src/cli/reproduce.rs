//! `pgsrm reproduce`: the paper's comparison on one task. PGSRM and the binary baseline train on
//! the same seeds, each run is evaluated on the held-out prompts, and `report.md` with plots
//! compares them.

use crate::cli::train;
use anyhow::{Context, Result, bail};
use clap::Parser;
use pgsrm::model::io::write_atomic;
use pgsrm::model::spec::load_model;
use pgsrm::run::eval::evaluate;
use pgsrm::run::folder::latest_checkpoint;
use pgsrm::run::report::{EVAL, Group, RunCurves, write_report};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Task: colors, opposites, categories, copy or negative
    #[arg(long)]
    task: String,
    /// Seeds, comma-separated; every seed runs under both rewards
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Child (default as for `pgsrm train`: GPT-2 when found, else smollm2-135m-instruct)
    #[arg(long)]
    model: Option<String>,
    /// Episodes per run (default as for `pgsrm train`)
    #[arg(long)]
    episodes: Option<u64>,
    /// Episodes per update (default as for `pgsrm train`)
    #[arg(long)]
    batch_size: Option<usize>,
    /// Folder for the runs and the report (default: runs/reproduce-<task>)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Embedder of the PGSRM reward and of the held-out reward
    #[arg(long, default_value = "minilm")]
    embedder: String,
    /// No progress lines
    #[arg(long)]
    quiet: bool,
}

/// `pgsrm train`'s flags, parsed from an argument list built here.
#[derive(Parser)]
struct TrainFlags {
    #[command(flatten)]
    args: train::Args,
}

pub const REWARDS: [&str; 2] = ["pgsrm", "binary"];

pub fn run(args: Args) -> Result<()> {
    if args.seeds.is_empty() {
        bail!("--seeds: give at least one seed");
    }
    let t0 = Instant::now();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/reproduce-{}", args.task)));
    let mut paths = Vec::new();
    let total = REWARDS.len() * args.seeds.len();
    for reward in REWARDS {
        for &seed in &args.seeds {
            if !args.quiet {
                eprintln!(
                    "\nreproduce: run {} of {total} ({reward} reward, seed {seed})",
                    paths.len() + 1
                );
            }
            let mut argv: Vec<String> = vec!["train".into()];
            let mut flag = |k: &str, v: String| {
                argv.push(format!("--{k}"));
                argv.push(v);
            };
            let name = format!("{}-{reward}-seed{seed}", args.task);
            let existing = out.join(&name);
            if existing.join(pgsrm::run::folder::CONFIG).is_file()
                && latest_checkpoint(&existing)?.is_none()
            {
                // Stopped before its one checkpoint: nothing in it can be continued.
                eprintln!(
                    "{}: stopped before its checkpoint; starting it again",
                    existing.display()
                );
                std::fs::remove_dir_all(&existing)
                    .with_context(|| format!("cannot clear {}", existing.display()))?;
            }
            if existing.join(pgsrm::run::folder::CONFIG).is_file() {
                // A reproduction run again continues (or just re-reads) the runs it already has.
                flag("resume", existing.display().to_string());
                flag("embedder", args.embedder.clone());
                if args.quiet {
                    argv.push("--quiet".into());
                }
                let flags = TrainFlags::try_parse_from(&argv)
                    .with_context(|| format!("train flags {argv:?}"))?;
                paths.push(train::train(&flags.args)?);
                continue;
            }
            flag("task", args.task.clone());
            flag("reward", reward.into());
            flag("seed", seed.to_string());
            flag("runs-dir", out.display().to_string());
            flag("run-name", name);
            flag("embedder", args.embedder.clone());
            // Runs of a reproduction are short: one checkpoint at the end, which evaluation
            // reads, rather than one every ten updates (each is three copies of the weights).
            flag("checkpoint-every", "0".into());
            if let Some(m) = &args.model {
                flag("model", m.clone());
            }
            if let Some(e) = args.episodes {
                flag("episodes", e.to_string());
            }
            if let Some(b) = args.batch_size {
                flag("batch-size", b.to_string());
            }
            if args.quiet {
                argv.push("--quiet".into());
            }
            let flags = TrainFlags::try_parse_from(&argv)
                .with_context(|| format!("train flags {argv:?}"))?;
            let path = train::train(&flags.args)?;
            paths.push(path);
        }
    }
    let embedder = pgsrm::reward::embedder::by_name(&args.embedder, &Default::default())?;
    for p in &paths {
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(p.join("config.json"))?)?;
        let (_, ck) = latest_checkpoint(p)?
            .with_context(|| format!("{}: no checkpoint to evaluate", p.display()))?;
        let loaded = load_model(&ck.display().to_string())?;
        let task = pgsrm::tasks::by_name(&args.task)?;
        let max_new = cfg["max_new_tokens"]
            .as_u64()
            .map(|n| n as usize)
            .unwrap_or(task.settings.max_new_tokens);
        let chat = cfg["chat"].as_bool().unwrap_or(false);
        let r = evaluate(&loaded, &task, chat, max_new, Some(embedder.as_ref()), 5)?;
        write_atomic(&p.join(EVAL), serde_json::to_string_pretty(&r)?.as_bytes())?;
        if !args.quiet {
            eprintln!(
                "held-out {}: exact match {:.3}, mean PGSRM reward {:.4}",
                p.display(),
                r["exact_match"].as_f64().unwrap_or(f64::NAN),
                r["mean_reward"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    let curves: Vec<RunCurves> = paths
        .iter()
        .map(|p| RunCurves::load(p))
        .collect::<Result<_>>()?;
    let groups: Vec<Group> = REWARDS
        .iter()
        .map(|r| Group {
            name: r.to_string(),
            runs: curves.iter().filter(|c| c.reward() == Some(*r)).collect(),
        })
        .collect();
    let child = curves[0].config["child_choice"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let wall = t0.elapsed().as_secs_f64();
    let preamble = format!(
        "Task `{}`, seeds {:?}, {} episodes per run. {child}\n\nWall time of the whole \
         reproduction (training, evaluation, report): {wall:.0} s.",
        args.task, args.seeds, curves[0].config["episodes"]
    );
    write_report(
        &groups,
        &out,
        &format!("PGSRM vs binary on {}", args.task),
        &preamble,
    )?;
    eprintln!("wrote {} ({wall:.0} s)", out.join("report.md").display());
    Ok(())
}
