//! `pgsrm reproduce`: the paper's comparison on one task, several or all five. PGSRM and the binary
//! baseline train on the same seeds, each run is evaluated on its task's held-out prompts, and
//! `report.md` with plots compares them: per task, and with several tasks one table and one
//! figure over all of them. On the CPU several runs train at once (`--jobs`), each on its own
//! share of the threads; a run's figures do not depend on that. `--scale` says how big the runs
//! are: `pgsrm train`'s defaults (quick) or the paper's settings per task (paper); `--plan`
//! prints the runs and their settings without training.

mod jobs;
mod scale;
mod summary;
mod workers;

use crate::cli::train::{self, lock};
use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use jobs::*;
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::files::write_atomic;
use pgsrm::model::spec::load_model;
use pgsrm::ppo::PpoConfig;
use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::EmbedderOptions;
use pgsrm::run::eval::evaluate;
use pgsrm::run::folder::{CONFIG, STATE_JSON, latest_checkpoint};
use pgsrm::run::progress::{JobProgress, PlannedRun, duration};
use pgsrm::run::report::{
    EVAL, Group, RunCurves, TaskReport, charts, write_report, write_tasks_report,
};
use pgsrm::run::train::PAPER_EPISODES;
use pgsrm::tasks::NAMES;
use scale::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;
use summary::*;
use workers::*;

#[derive(clap::Args)]
pub struct Args {
    /// Task: colors, opposites, categories, copy or negative; several separated by commas; or all
    #[arg(long)]
    task: String,
    /// Seeds, comma-separated; every seed runs under both rewards
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// How big the runs are. quick: `pgsrm train`'s defaults (without GPT-2 weights in the
    /// Hugging Face cache, SmolLM2-135M-Instruct with 240 episodes of 8 per run, minutes on a
    /// CPU; with them, the paper's settings). paper: the paper's settings per task, batch 50 and
    /// 2 new tokens for colors, opposites and categories, batch 10 and 10 new tokens for copy and
    /// negative, 100,000 episodes per run, the child GPT-2 small (word tasks) or GPT-2 large
    /// (sentence tasks) when its weights are in the Hugging Face cache, else
    /// SmolLM2-135M-Instruct; a checkpoint every 10,000 episodes. Default: paper on a CUDA GPU,
    /// quick otherwise (cpu, emu). --model, --episodes and --batch-size override either
    #[arg(long, value_enum)]
    scale: Option<Scale>,
    /// Child (default as for `pgsrm train`: the task's GPT-2 when found, else
    /// smollm2-135m-instruct)
    #[arg(long)]
    model: Option<String>,
    /// Episodes per run (default: the scale's)
    #[arg(long)]
    episodes: Option<u64>,
    /// Episodes per update (default: the scale's)
    #[arg(long)]
    batch_size: Option<usize>,
    /// Folder for the runs and the report (default: runs/reproduce-<task>, runs/reproduce-all
    /// for all five tasks; runs/reproduce-paper-<task> and runs/reproduce-paper-all at the paper's
    /// scale)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Embedder of the PGSRM reward and of the held-out reward
    #[arg(long, default_value = "minilm")]
    embedder: String,
    /// Where the runs train and are evaluated: auto (a CUDA GPU when present, else the CPU),
    /// cpu, cuda, or emu (the emulated device; for checking, it is slow)
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Runs trained at once, the threads shared among them (default: on the CPU one per thread,
    /// at most one per 8 GiB of memory available; one when the runs may go to a GPU). The
    /// figures do not depend on it
    #[arg(long)]
    jobs: Option<usize>,
    /// No progress lines
    #[arg(long)]
    quiet: bool,
    /// Print the runs (folder, and whether each is new, half done or finished), each task's
    /// child and why, and its settings, then exit without training or writing anything
    #[arg(long)]
    plan: bool,
}

/// `pgsrm train`'s flags, parsed from an argument list built here.
#[derive(Parser)]
struct TrainFlags {
    #[command(flatten)]
    args: train::Args,
}

pub const REWARDS: [&str; 2] = ["pgsrm", "binary"];

/// The tasks `--task` names: one, a comma-separated list (each once, in the order given), or
/// `all` for the five in the paper's order.
pub fn parse_tasks(flag: &str) -> Result<Vec<&'static str>> {
    if flag.trim() == "all" {
        return Ok(NAMES.to_vec());
    }
    let mut tasks = Vec::new();
    for name in flag.split(',').map(str::trim) {
        let Some(&task) = NAMES.iter().find(|&&n| n == name) else {
            bail!(
                "--task: {name:?} is not a task; give one or more of {} separated by commas, or all",
                NAMES.join(", ")
            );
        };
        if !tasks.contains(&task) {
            tasks.push(task);
        }
    }
    Ok(tasks)
}

pub fn run(args: Args) -> Result<()> {
    if args.seeds.is_empty() {
        bail!("--seeds: give at least one seed");
    }
    if args.jobs == Some(0) {
        bail!("--jobs: give at least 1 (runs trained at once)");
    }
    let tasks = parse_tasks(&args.task)?;
    // The device first: a missing driver or device stops the job before any folder is made.
    let device = Device::open(args.device, 0)?;
    let (scale, chosen_by) = choose_scale(args.scale, &device);
    let t0 = Instant::now();
    let out = args.out.clone().unwrap_or_else(|| {
        let name = if tasks == NAMES {
            "all".into()
        } else {
            tasks.join("-")
        };
        // The paper's runs in folders of their own: a quick job's runs are never continued as
        // the paper's (nor the other way round), whichever ran first.
        match scale {
            Scale::Quick => PathBuf::from(format!("runs/reproduce-{name}")),
            Scale::Paper => PathBuf::from(format!("runs/reproduce-paper-{name}")),
        }
    });
    // One task keeps its runs and report in `out`; several have a folder each under it.
    let single = tasks.len() == 1;
    let task_dir = |task: &str| {
        if single { out.clone() } else { out.join(task) }
    };
    let mut jobs = Vec::new();
    for &task in &tasks {
        for reward in REWARDS {
            for &seed in &args.seeds {
                let runs_dir = task_dir(task);
                let fresh = fresh_argv(&args, scale, task, reward, seed, &runs_dir)?;
                let settings = pgsrm::run::train::resolve(&parse_train(&fresh)?.options())?;
                jobs.push(Job {
                    task,
                    reward,
                    seed,
                    dir: runs_dir.join(format!("{task}-{reward}-seed{seed}")),
                    fresh,
                    settings,
                });
            }
        }
    }
    let scale_words = format!("{}, {chosen_by}", scale.describe(&args));
    if args.plan {
        return print_plan(&args, &jobs, &scale_words, &device, &out);
    }
    for job in &jobs {
        job.check_existing(scale)?;
    }
    let planned = jobs
        .iter()
        .map(|job| {
            Ok(PlannedRun {
                task: job.task.to_string(),
                reward: job.reward.to_string(),
                seed: job.seed,
                episodes: job.episodes(&args)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let n = jobs.len();
    let parallel = args
        .jobs
        .unwrap_or_else(|| default_parallel(&device))
        .clamp(1, n.max(1));
    let threads = (rayon::current_num_threads() / parallel).max(1);
    if !args.quiet && parallel > 1 {
        eprintln!("reproduce: {parallel} runs at once, {threads} thread(s) each");
    }
    if parallel > 1 {
        device.share_between_threads();
    }
    let shared = Shared {
        args: &args,
        scale,
        scale_words: &scale_words,
        device: &device,
        jobs: &jobs,
        single,
        out: &out,
        task_dir: &task_dir,
        t0,
        progress: Mutex::new(JobProgress::new(planned, parallel)),
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        done: Mutex::new(Done {
            evaluated: vec![false; n],
            reports: Vec::new(),
            finished_before: 0,
        }),
    };
    let errors: Vec<anyhow::Error> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..parallel)
            .map(|_| s.spawn(|| shared.worker(threads)))
            .collect();
        workers
            .into_iter()
            .filter_map(|w| match w.join() {
                Ok(result) => result.err(),
                Err(_) => Some(anyhow::anyhow!("a run panicked")),
            })
            .collect()
    });
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    let Done {
        mut reports,
        finished_before,
        ..
    } = shared.done.into_inner().unwrap_or_else(|e| e.into_inner());
    // In the order of `--task`, whichever finished first.
    reports.sort_by_key(|r| tasks.iter().position(|&t| t == r.task));
    let wall = t0.elapsed().as_secs_f64();
    if !single {
        let read = if finished_before > 0 {
            format!(
                "; {finished_before} of its {n} runs were finished before and only read, so a \
                 job that trains them all takes longer"
            )
        } else {
            String::new()
        };
        let preamble = format!(
            "Tasks {}; seeds {:?}; every seed under both rewards; scale {scale_words}. Each task's \
             child and settings:\n\n\
             {}\nWall time of this run of the command (training, evaluation, reports): {}{read}.",
            tasks.join(", "),
            args.seeds,
            settings_table(&reports),
            wall_time(wall)
        );
        write_tasks_report(
            &reports,
            &out,
            "PGSRM vs binary on the paper's tasks",
            &preamble,
        )?;
    }
    eprintln!(
        "\nwrote {} ({})",
        out.join("report.md").display(),
        wall_time(wall)
    );
    Ok(())
}
