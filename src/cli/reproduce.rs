//! `pgsrm reproduce`: the paper's comparison on one task, several or all five. PGSRM and the binary
//! baseline train on the same seeds, each run is evaluated on its task's held-out prompts, and
//! `report.md` with plots compares them: per task, and with several tasks one table and one
//! figure over all of them. On the CPU several runs train at once (`--jobs`), each on its own
//! share of the threads; a run's figures do not depend on that. `--scale` says how big the runs
//! are: `pgsrm train`'s defaults (quick) or the paper's settings per task (paper); `--plan`
//! prints the runs and their settings without training.

use crate::cli::train::{self, lock};
use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
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
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

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

/// How big a reproduction's runs are (`--scale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scale {
    /// `pgsrm train`'s defaults: the SmolLM2 fallback's short runs without GPT-2 weights
    Quick,
    /// the paper's batch, new tokens and 100,000 episodes per run for each task
    Paper,
}

/// Episodes between the checkpoints of a run at the paper's scale: a run of 100,000 episodes
/// that stops (a crash, a machine taken back) continues from the last of them rather than from
/// the start; only the newest is kept.
const PAPER_CHECKPOINT_EPISODES: u64 = 10_000;

impl Scale {
    fn name(self) -> &'static str {
        match self {
            Scale::Quick => "quick",
            Scale::Paper => "paper",
        }
    }

    /// What the scale runs, in words, with the flags that override it.
    fn describe(self, args: &Args) -> String {
        let what = match self {
            Scale::Quick => "`pgsrm train`'s defaults for each task",
            Scale::Paper => {
                "the paper's batch, new tokens and 100,000 episodes per run for each task"
            }
        };
        let given: Vec<&str> = [
            (args.model.is_some(), "--model"),
            (args.episodes.is_some(), "--episodes"),
            (args.batch_size.is_some(), "--batch-size"),
        ]
        .into_iter()
        .filter_map(|(g, f)| g.then_some(f))
        .collect();
        if given.is_empty() {
            format!("{} ({what})", self.name())
        } else {
            format!("{} ({what}; {} as given)", self.name(), given.join(", "))
        }
    }
}

/// The scale `--scale` names, else the device's: the paper's on a CUDA GPU, quick on the CPU
/// and on the emulated device. With the words that say which it was.
fn choose_scale(flag: Option<Scale>, device: &Device) -> (Scale, &'static str) {
    match flag {
        Some(s) => (s, "set by --scale"),
        None if device.gpu().is_some_and(|g| g.emu().is_none()) => {
            (Scale::Paper, "the default on a CUDA GPU")
        }
        None => (Scale::Quick, "the default off a CUDA GPU"),
    }
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

/// One run of the job: where it lives, the `pgsrm train` flags that start or continue it, and
/// the settings those flags give a new run.
struct Job {
    task: &'static str,
    reward: &'static str,
    seed: u64,
    dir: PathBuf,
    fresh: Vec<String>,
    /// The config.json a new run gets from `fresh` (`pgsrm::run::train::resolve`).
    settings: Value,
}

impl Job {
    /// Whether the run has trained all its episodes: its newest checkpoint counts as many as
    /// its config asks for.
    fn complete(&self) -> Result<bool> {
        let Some((_, ck)) = latest_checkpoint(&self.dir)? else {
            return Ok(false);
        };
        let read = |p: &Path| -> Result<Value> {
            serde_json::from_str(&std::fs::read_to_string(p)?)
                .with_context(|| format!("{}: not valid JSON", p.display()))
        };
        let cfg = read(&self.dir.join(CONFIG))?;
        let state = read(&ck.join(STATE_JSON))?;
        Ok(matches!(
            (state["episodes"].as_u64(), cfg["episodes"].as_u64()),
            (Some(done), Some(total)) if done >= total
        ))
    }

    /// The flags that continue this run when it has a config, else those that start it.
    fn argv(&self, args: &Args, scale: Scale) -> Vec<String> {
        if self.dir.join(CONFIG).is_file() {
            // A reproduction run again continues (or just re-reads) the runs it already has.
            let mut argv: Vec<String> = vec![
                "train".into(),
                "--resume".into(),
                self.dir.display().to_string(),
                "--embedder".into(),
                args.embedder.clone(),
                "--device".into(),
                device_flag(args.device),
            ];
            if args.quiet {
                argv.push("--quiet".into());
            }
            if scale == Scale::Paper {
                // As when it started: only the newest of its checkpoints is kept.
                argv.extend(["--keep-checkpoints".into(), "1".into()]);
            }
            argv
        } else {
            self.fresh.clone()
        }
    }

    /// The config.json of the run already in this job's folder, if there is one.
    fn existing(&self) -> Result<Option<Value>> {
        match std::fs::read_to_string(self.dir.join(CONFIG)) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}/{CONFIG}: not valid JSON", self.dir.display()))
                .map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The episodes this run trains: its config's when it has one, else what `pgsrm train`
    /// resolves its flags to.
    fn episodes(&self, args: &Args) -> Result<u64> {
        let cfg = self.existing()?.unwrap_or_else(|| self.settings.clone());
        cfg["episodes"]
            .as_u64()
            .or(args.episodes)
            .with_context(|| format!("{}/{CONFIG}: no episodes", self.dir.display()))
    }

    /// Fails, naming the folder and each setting that differs, when the folder holds a run
    /// whose settings are not those this job would start it with: a job continues or reads the
    /// runs it finds, and must not mix another job's runs (of another scale, child or length)
    /// into its report.
    fn check_existing(&self, scale: Scale) -> Result<()> {
        let Some(there) = self.existing()? else {
            return Ok(());
        };
        let diffs = differences(&there, &self.settings);
        if !diffs.is_empty() {
            bail!(
                "{}: holds a run with other settings than this job's (--scale {}): {}. Give \
                 another --out, the flags that run had, or remove the folder to train it again",
                self.dir.display(),
                scale.name(),
                diffs.join("; ")
            );
        }
        Ok(())
    }

    /// How far the run in this folder is, for the plan.
    fn state(&self) -> Result<String> {
        if self.existing()?.is_none() {
            return Ok("new".into());
        }
        let Some((step, ck)) = latest_checkpoint(&self.dir)? else {
            return Ok("stopped before its first checkpoint: starts again".into());
        };
        if self.complete()? {
            return Ok("finished: read, not trained".into());
        }
        let done: Value = serde_json::from_str(&std::fs::read_to_string(ck.join(STATE_JSON))?)
            .with_context(|| format!("{}/{STATE_JSON}: not valid JSON", ck.display()))?;
        Ok(format!(
            "continues from step-{step} ({} episodes done)",
            done["episodes"]
        ))
    }
}

/// The settings of a run that shape its figures: `there` (a run folder's config.json) against
/// `here` (a new run's), as "name X there, Y here" for each that differs.
fn differences(there: &Value, here: &Value) -> Vec<String> {
    fn show(v: &Value) -> String {
        match v {
            // The learning rates and coefficients are f32s in the config.
            Value::Number(n) if n.is_f64() => {
                format!("{:e}", n.as_f64().unwrap_or(f64::NAN) as f32)
            }
            Value::Null => "none".into(),
            v => v.to_string(),
        }
    }
    let mut diffs = Vec::new();
    let mut compare = |name: &str, a: &Value, b: &Value| {
        if a != b {
            diffs.push(format!("{name} {} there, {} here", show(a), show(b)));
        }
    };
    for key in ["task", "reward", "seed", "model", "episodes", "embedder"] {
        compare(key, &there[key], &here[key]);
    }
    // Both through `PpoConfig`, so that a setting an older config leaves out reads as its default.
    let ppo = |cfg: &Value| -> std::result::Result<Value, String> {
        serde_json::from_value::<PpoConfig>(cfg["ppo"].clone())
            .and_then(serde_json::to_value)
            .map_err(|e| e.to_string())
    };
    match (ppo(there), ppo(here)) {
        (Ok(a), Ok(b)) => {
            if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
                for (key, b) in b {
                    compare(key, a.get(key).unwrap_or(&Value::Null), b);
                }
            }
        }
        (Err(e), _) => diffs.push(format!("its PPO settings cannot be read ({e})")),
        (_, Err(e)) => diffs.push(format!("this job's PPO settings: {e}")),
    }
    diffs
}

fn parse_train(argv: &[String]) -> Result<train::Args> {
    Ok(TrainFlags::try_parse_from(argv)
        .with_context(|| format!("train flags {argv:?}"))?
        .args)
}

/// The flags of a fresh run of `task` under `reward` with `seed`, into `runs_dir`, at `scale`.
fn fresh_argv(
    args: &Args,
    scale: Scale,
    task: &str,
    reward: &str,
    seed: u64,
    runs_dir: &Path,
) -> Result<Vec<String>> {
    let mut argv: Vec<String> = vec!["train".into()];
    let mut flag = |k: &str, v: String| {
        argv.push(format!("--{k}"));
        argv.push(v);
    };
    flag("task", task.into());
    flag("reward", reward.into());
    flag("seed", seed.to_string());
    flag("runs-dir", runs_dir.display().to_string());
    flag("run-name", format!("{task}-{reward}-seed{seed}"));
    flag("embedder", args.embedder.clone());
    flag("device", device_flag(args.device));
    let (episodes, batch_size) = match scale {
        Scale::Quick => {
            // Runs of a quick reproduction are short: one checkpoint at the end, which
            // evaluation reads, rather than one every ten updates.
            flag("checkpoint-every", "0".into());
            (args.episodes, args.batch_size)
        }
        Scale::Paper => {
            // The paper's settings for the task: its batch and new tokens (`pgsrm tasks`), and
            // its run length. The child is `pgsrm train`'s choice (the task's GPT-2 when found,
            // else SmolLM2). A run that long keeps a checkpoint every 10,000 episodes, the newest
            // only, so that one that stops continues.
            let settings = pgsrm::tasks::by_name(task)?.settings;
            let batch = args.batch_size.unwrap_or(settings.batch_size);
            let every = PAPER_CHECKPOINT_EPISODES.div_ceil(batch.max(1) as u64);
            flag("max-new-tokens", settings.max_new_tokens.to_string());
            flag("checkpoint-every", every.to_string());
            flag("keep-checkpoints", "1".into());
            (Some(args.episodes.unwrap_or(PAPER_EPISODES)), Some(batch))
        }
    };
    if let Some(m) = &args.model {
        flag("model", m.clone());
    }
    if let Some(e) = episodes {
        flag("episodes", e.to_string());
    }
    if let Some(b) = batch_size {
        flag("batch-size", b.to_string());
    }
    // The last checkpoint without the optimiser moments, which only a run that goes on needs:
    // a third of the size (0.5 GB instead of 1.6 for SmolLM2, 30 runs of them for all five
    // tasks).
    argv.push("--lean-last-checkpoint".into());
    if args.quiet {
        argv.push("--quiet".into());
    }
    Ok(argv)
}

/// `choice` as its `--device` value.
fn device_flag(choice: DeviceChoice) -> String {
    choice
        .to_possible_value()
        .map_or_else(|| "auto".into(), |v| v.get_name().to_string())
}

/// Evaluates a run's newest checkpoint on its task's held-out prompts into its `eval.json`,
/// unless that file already holds this checkpoint's evaluation.
fn evaluate_run(
    path: &Path,
    task: &str,
    embedder: &dyn Embedder,
    device: &Device,
    quiet: bool,
) -> Result<()> {
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(path.join(CONFIG))?)
        .with_context(|| format!("{}/{CONFIG}: not valid JSON", path.display()))?;
    let (step, ck) = latest_checkpoint(path)?
        .with_context(|| format!("{}: no checkpoint to evaluate", path.display()))?;
    let checkpoint = format!("step-{step}");
    let eval_path = path.join(EVAL);
    if let Ok(text) = std::fs::read_to_string(&eval_path)
        && let Ok(old) = serde_json::from_str::<Value>(&text)
        && old["checkpoint"] == checkpoint.as_str()
    {
        return Ok(());
    }
    let loaded = load_model(&ck.display().to_string())?;
    let task = pgsrm::tasks::by_name(task)?;
    let max_new = cfg["max_new_tokens"]
        .as_u64()
        .map(|n| n as usize)
        .unwrap_or(task.settings.max_new_tokens);
    let chat = cfg["chat"].as_bool().unwrap_or(false);
    let mut r = evaluate(&loaded, &task, chat, max_new, Some(embedder), 5, device)?;
    r["checkpoint"] = checkpoint.into();
    write_atomic(&eval_path, serde_json::to_string_pretty(&r)?.as_bytes())?;
    if !quiet {
        eprintln!(
            "held-out {}: exact match {:.3}, mean PGSRM reward {:.4}",
            path.display(),
            r["exact_match"].as_f64().unwrap_or(f64::NAN),
            r["mean_reward"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// Seconds, and from a minute on the same in minutes.
fn wall_time(seconds: f64) -> String {
    if seconds >= 60.0 {
        format!("{seconds:.0} s ({})", duration(seconds))
    } else {
        format!("{seconds:.0} s")
    }
}

/// A markdown table of each task's child, why it is that one, and its settings.
fn settings_table(reports: &[TaskReport]) -> String {
    let mut t =
        String::from("| task | child | why this child | settings |\n| --- | --- | --- | --- |\n");
    for r in reports {
        t.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.task, r.child, r.child_reason, r.settings
        ));
    }
    t
}

/// Why a run's child is the one it is, in a few words: its config's `child_reason` (older
/// configs have only the long `child_choice`).
fn child_reason(cfg: &Value) -> String {
    cfg["child_reason"]
        .as_str()
        .or_else(|| cfg["child_choice"].as_str())
        .unwrap_or("not recorded")
        .to_string()
}

/// The one-line description of a task's runs for a report: its settings.
fn settings_line(cfg: &Value) -> String {
    let ppo = &cfg["ppo"];
    // The learning rate is an f32 in the config: shown as one, not as the f64 that holds it.
    let lr = ppo["actor_lr"]
        .as_f64()
        .map_or_else(|| "?".into(), |x| format!("{:e}", x as f32));
    let entropy = ppo["entropy_coef"]
        .as_f64()
        .map_or_else(|| "?".into(), |x| format!("{}", x as f32));
    format!(
        "{} episodes per run, batch {}, {} new tokens, actor lr {lr}, {}, {} baseline, entropy \
         bonus {entropy}",
        cfg["episodes"],
        ppo["batch_size"],
        ppo["max_new_tokens"],
        if ppo["chat"].as_bool() == Some(true) {
            "chat prompts"
        } else {
            "raw prompts"
        },
        ppo["baseline"].as_str().unwrap_or("?"),
    )
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

/// `--plan`: the job's runs and their settings on stdout; nothing is trained or written.
fn print_plan(
    args: &Args,
    jobs: &[Job],
    scale_words: &str,
    device: &Device,
    out: &Path,
) -> Result<()> {
    let episodes = jobs.iter().map(|j| j.episodes(args)).sum::<Result<u64>>()?;
    println!(
        "reproduce: scale {scale_words}; on {}; seeds {:?}, each under both rewards: {} runs, \
         {episodes} episodes in all, into {}",
        device.name(),
        args.seeds,
        jobs.len(),
        out.display()
    );
    let mut tasks: Vec<&str> = jobs.iter().map(|j| j.task).collect();
    tasks.dedup();
    for task in tasks {
        let runs: Vec<&Job> = jobs.iter().filter(|j| j.task == task).collect();
        let cfg = &runs[0].settings;
        println!(
            "\n{task}: child {} ({})",
            cfg["model"].as_str().unwrap_or("?"),
            child_reason(cfg)
        );
        let updates = cfg["episodes"]
            .as_u64()
            .zip(cfg["ppo"]["batch_size"].as_u64())
            .map_or(0, |(e, b)| e.div_ceil(b.max(1)));
        let every = match cfg["checkpoint_every"].as_u64() {
            Some(n) if n > 0 && n < updates => {
                format!("{updates} updates, a checkpoint every {n}, the newest kept")
            }
            _ => format!("{updates} updates, one checkpoint at the end"),
        };
        println!("  {}; {every}", settings_line(cfg));
        for job in runs {
            let differs = job
                .existing()?
                .map(|there| differences(&there, &job.settings))
                .unwrap_or_default();
            let state = if differs.is_empty() {
                job.state()?
            } else {
                format!(
                    "holds a run with other settings ({}): the job stops there",
                    differs.join("; ")
                )
            };
            println!("  {}: {state}", job.dir.display());
        }
    }
    Ok(())
}

/// Memory a run may take, for the default number of runs at once: a SmolLM2 run of the fallback
/// peaks at 6.3 GB resident (policy, reference and its transposed copy, gradients, moments,
/// activations, the checkpoint's copy of the state), with room to spare.
const MEMORY_PER_RUN: u64 = 8 << 30;

/// Runs trained at once unless `--jobs` says: on the CPU one per thread of the pool, at most one
/// per `MEMORY_PER_RUN` of the memory available; one on a GPU.
fn default_parallel(device: &Device) -> usize {
    if device.gpu().is_some() {
        return 1;
    }
    let threads = rayon::current_num_threads();
    let by_memory = available_memory().map_or(threads, |b| (b / MEMORY_PER_RUN) as usize);
    threads.min(by_memory).max(1)
}

/// Bytes of memory available to new work (`MemAvailable` of /proc/meminfo), where known.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the runs of a job share while several train at once.
struct Shared<'a> {
    args: &'a Args,
    scale: Scale,
    /// The scale in words, and how it was chosen, for the reports.
    scale_words: &'a str,
    /// Where every run trains and is evaluated: the device the command opened.
    device: &'a Device,
    jobs: &'a [Job],
    single: bool,
    out: &'a Path,
    task_dir: &'a (dyn Fn(&str) -> PathBuf + Sync),
    t0: Instant,
    progress: Mutex<JobProgress>,
    /// The next job no run has taken yet.
    next: AtomicUsize,
    /// Set when a run fails: the others finish their run and take no other.
    failed: AtomicBool,
    done: Mutex<Done>,
}

/// The runs evaluated so far, and the reports of the tasks they complete.
struct Done {
    evaluated: Vec<bool>,
    reports: Vec<TaskReport>,
    finished_before: usize,
}

impl Shared<'_> {
    /// Takes jobs until none is left, each trained and evaluated on a pool of `threads`
    /// threads. A run's figures do not depend on its threads (the products split their work
    /// the same way on any number), so neither do they on how many runs train at once.
    fn worker(&self, threads: usize) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("cannot start the threads of a run")?;
        pool.install(|| {
            let args = self.args;
            let embedder = pgsrm::reward::embedder::by_name(
                &args.embedder,
                &EmbedderOptions {
                    encoders: Some(self.device.encoders()),
                    ..Default::default()
                },
            )?;
            while !self.failed.load(Ordering::SeqCst) {
                let k = self.next.fetch_add(1, Ordering::SeqCst);
                if k >= self.jobs.len() {
                    break;
                }
                if let Err(e) = self.run_job(k, embedder.as_ref()) {
                    self.failed.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
            Ok(())
        })
    }

    /// Trains job `k` (or reads it, when it is finished already), evaluates it, and writes its
    /// task's report when it is the last of that task's runs to be evaluated.
    fn run_job(&self, k: usize, embedder: &dyn Embedder) -> Result<()> {
        let (args, job, n) = (self.args, &self.jobs[k], self.jobs.len());
        if !args.quiet {
            eprintln!(
                "\nreproduce: run {} of {n} ({} task, {} reward, seed {})",
                k + 1,
                job.task,
                job.reward,
                job.seed
            );
        }
        if job.dir.join(CONFIG).is_file() && latest_checkpoint(&job.dir)?.is_none() {
            // Stopped before its one checkpoint: nothing in it can be continued.
            eprintln!(
                "{}: stopped before its checkpoint; starting it again",
                job.dir.display()
            );
            std::fs::remove_dir_all(&job.dir)
                .with_context(|| format!("cannot clear {}", job.dir.display()))?;
        }
        lock(&self.progress).start_run(k);
        let path = if job.complete()? {
            lock(&self.done).finished_before += 1;
            // Trained already: its last checkpoint is only read, for evaluation.
            let mut p = lock(&self.progress);
            let episodes = p.runs()[k].episodes;
            p.resume_run(k, episodes);
            job.dir.clone()
        } else {
            train::train_with(
                &parse_train(&job.argv(args, self.scale))?,
                self.device,
                Some((&self.progress, k)),
            )?
        };
        let te = Instant::now();
        evaluate_run(&path, job.task, embedder, self.device, args.quiet)?;
        lock(&self.progress).record_eval(te.elapsed().as_secs_f64());
        let task_done = {
            let mut done = lock(&self.done);
            done.evaluated[k] = true;
            self.jobs
                .iter()
                .zip(&done.evaluated)
                .all(|(j, &e)| e || j.task != job.task)
        };
        if task_done {
            // One task's report says the whole job's wall time; several tasks' reports leave
            // it to the report over them.
            let wall = self.single.then(|| self.t0.elapsed().as_secs_f64());
            let dir = (self.task_dir)(job.task);
            let report = task_report(job.task, self.jobs, &dir, self.out, wall, self.scale_words)?;
            lock(&self.done).reports.push(report);
        }
        Ok(())
    }
}

/// Writes the report of `task`'s runs into `dir` and returns what the report over tasks needs.
fn task_report(
    task: &str,
    jobs: &[Job],
    dir: &Path,
    out: &Path,
    wall: Option<f64>,
    scale_words: &str,
) -> Result<TaskReport> {
    let curves: Vec<RunCurves> = jobs
        .iter()
        .filter(|j| j.task == task)
        .map(|j| RunCurves::load(&j.dir))
        .collect::<Result<_>>()?;
    let groups: Vec<Group> = REWARDS
        .iter()
        .map(|r| Group {
            name: r.to_string(),
            runs: curves.iter().filter(|c| c.reward() == Some(*r)).collect(),
        })
        .collect();
    let cfg = &curves[0].config;
    let child = cfg["model"].as_str().unwrap_or("").to_string();
    let reason = child_reason(cfg);
    let seeds: Vec<u64> = curves
        .iter()
        .filter(|c| c.reward() == Some(REWARDS[0]))
        .filter_map(|c| c.config["seed"].as_u64())
        .collect();
    let settings = settings_line(cfg);
    let about = format!(
        "Task `{task}`, seeds {seeds:?}, scale {scale_words}: {settings}. Child: {child} \
         ({reason})."
    );
    let preamble = match wall {
        Some(wall) => format!(
            "{about}\n\nWall time of the whole reproduction (training, evaluation, report): {}.",
            wall_time(wall)
        ),
        None => about,
    };
    let summaries = write_report(
        &groups,
        dir,
        &format!("PGSRM vs binary on {task}"),
        &preamble,
    )?;
    let mut reward = charts(&groups).swap_remove(0).1;
    reward.title = task.to_string();
    let folder = dir
        .strip_prefix(out)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dir.display().to_string());
    Ok(TaskReport {
        task: task.to_string(),
        folder,
        settings,
        child,
        child_reason: reason,
        summaries,
        reward,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        args: Args,
    }

    fn args(flags: &[&str]) -> Args {
        let argv = [
            &["reproduce", "--task", "colors", "--device", "cpu"][..],
            flags,
        ]
        .concat();
        Flags::try_parse_from(argv).unwrap().args
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The quick scale gives `pgsrm train` the flags a reproduction always gave it.
    #[test]
    fn quick_scale_passes_train_the_flags_it_always_did() {
        let dir = Path::new("runs/x");
        let argv = fresh_argv(&args(&[]), Scale::Quick, "colors", "pgsrm", 2, dir).unwrap();
        let base = [
            "train",
            "--task",
            "colors",
            "--reward",
            "pgsrm",
            "--seed",
            "2",
            "--runs-dir",
            "runs/x",
            "--run-name",
            "colors-pgsrm-seed2",
            "--embedder",
            "minilm",
            "--device",
            "cpu",
            "--checkpoint-every",
            "0",
        ];
        assert_eq!(
            argv,
            strings(&[&base[..], &["--lean-last-checkpoint"]].concat())
        );
        let flags = [
            "--model",
            "m",
            "--episodes",
            "5",
            "--batch-size",
            "3",
            "--quiet",
        ];
        let argv = fresh_argv(&args(&flags), Scale::Quick, "colors", "pgsrm", 2, dir).unwrap();
        let more = [
            "--model",
            "m",
            "--episodes",
            "5",
            "--batch-size",
            "3",
            "--lean-last-checkpoint",
            "--quiet",
        ];
        assert_eq!(argv, strings(&[&base[..], &more[..]].concat()));
    }

    /// The paper's scale: the task's batch and new tokens, 100,000 episodes, a checkpoint every
    /// 10,000 episodes; flags override the batch and the episodes.
    #[test]
    fn paper_scale_passes_the_tasks_settings() {
        let dir = Path::new("runs/x");
        let has = |argv: &[String], flag: &str, value: &str| {
            argv.windows(2).any(|w| w[0] == flag && w[1] == value)
        };
        for (task, batch, tokens, every) in
            [("colors", "50", "2", "200"), ("copy", "10", "10", "1000")]
        {
            let argv = fresh_argv(&args(&[]), Scale::Paper, task, "binary", 1, dir).unwrap();
            assert!(has(&argv, "--batch-size", batch), "{argv:?}");
            assert!(has(&argv, "--max-new-tokens", tokens), "{argv:?}");
            assert!(has(&argv, "--episodes", "100000"), "{argv:?}");
            assert!(has(&argv, "--checkpoint-every", every), "{argv:?}");
            assert!(has(&argv, "--keep-checkpoints", "1"), "{argv:?}");
            assert!(!argv.contains(&"--model".to_string()), "{argv:?}");
        }
        let flags = ["--episodes", "300", "--batch-size", "3"];
        let argv = fresh_argv(&args(&flags), Scale::Paper, "copy", "binary", 1, dir).unwrap();
        assert!(has(&argv, "--batch-size", "3"), "{argv:?}");
        assert!(has(&argv, "--episodes", "300"), "{argv:?}");
        assert!(has(&argv, "--checkpoint-every", "3334"), "{argv:?}");
    }
}
