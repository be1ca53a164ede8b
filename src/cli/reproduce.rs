//! `pgsrm reproduce`: the paper's comparison on one task, several or all five. PGSRM and the binary
//! baseline train on the same seeds, each run is evaluated on its task's held-out prompts, and
//! `report.md` with plots compares them: per task, and with several tasks one table and one
//! figure over all of them. On the CPU several runs train at once (`--jobs`), each on its own
//! share of the threads; a run's figures do not depend on that.

use crate::cli::train::{self, lock};
use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::files::write_atomic;
use pgsrm::model::spec::load_model;
use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::EmbedderOptions;
use pgsrm::run::eval::evaluate;
use pgsrm::run::folder::{CONFIG, STATE_JSON, latest_checkpoint};
use pgsrm::run::progress::{JobProgress, PlannedRun, duration};
use pgsrm::run::report::{
    EVAL, Group, RunCurves, TaskReport, charts, write_report, write_tasks_report,
};
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
    /// Child (default as for `pgsrm train`: GPT-2 when found, else smollm2-135m-instruct)
    #[arg(long)]
    model: Option<String>,
    /// Episodes per run (default as for `pgsrm train`)
    #[arg(long)]
    episodes: Option<u64>,
    /// Episodes per update (default as for `pgsrm train`)
    #[arg(long)]
    batch_size: Option<usize>,
    /// Folder for the runs and the report (default: runs/reproduce-<task>, runs/reproduce-all
    /// for all five tasks)
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

/// One run of the job: where it lives and the `pgsrm train` flags that start or continue it.
struct Job {
    task: &'static str,
    reward: &'static str,
    seed: u64,
    dir: PathBuf,
    fresh: Vec<String>,
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
    fn argv(&self, args: &Args) -> Vec<String> {
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
            argv
        } else {
            self.fresh.clone()
        }
    }

    /// The episodes this run trains: its config's when it has one, else what `pgsrm train`
    /// resolves its flags to.
    fn episodes(&self, args: &Args) -> Result<u64> {
        let cfg: Value = match std::fs::read_to_string(self.dir.join(CONFIG)) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}/{CONFIG}: not valid JSON", self.dir.display()))?,
            Err(_) => pgsrm::run::train::resolve(&parse_train(&self.fresh)?.options())?,
        };
        cfg["episodes"]
            .as_u64()
            .or(args.episodes)
            .with_context(|| format!("{}/{CONFIG}: no episodes", self.dir.display()))
    }
}

fn parse_train(argv: &[String]) -> Result<train::Args> {
    Ok(TrainFlags::try_parse_from(argv)
        .with_context(|| format!("train flags {argv:?}"))?
        .args)
}

/// The flags of a fresh run of `task` under `reward` with `seed`, into `runs_dir`.
fn fresh_argv(args: &Args, task: &str, reward: &str, seed: u64, runs_dir: &Path) -> Vec<String> {
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
    // Runs of a reproduction are short: one checkpoint at the end, which evaluation reads,
    // rather than one every ten updates; and without the optimiser moments, which only a run
    // that goes on needs: a third of the size (0.5 GB instead of 1.6 for SmolLM2, 30 runs of
    // them for all five tasks).
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
    argv.push("--lean-last-checkpoint".into());
    if args.quiet {
        argv.push("--quiet".into());
    }
    argv
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

/// A markdown table of each task's child and settings.
fn settings_table(reports: &[TaskReport]) -> String {
    let mut t = String::from("| task | child | settings |\n| --- | --- | --- |\n");
    for r in reports {
        t.push_str(&format!("| {} | {} | {} |\n", r.task, r.child, r.settings));
    }
    t
}

/// The one-line description of a task's runs for a report: its settings.
fn settings_line(cfg: &Value) -> String {
    let ppo = &cfg["ppo"];
    // The learning rate is an f32 in the config: shown as one, not as the f64 that holds it.
    let lr = ppo["actor_lr"]
        .as_f64()
        .map_or_else(|| "?".into(), |x| format!("{:e}", x as f32));
    format!(
        "{} episodes per run, batch {}, {} new tokens, actor lr {lr}, {}",
        cfg["episodes"],
        ppo["batch_size"],
        ppo["max_new_tokens"],
        if ppo["chat"].as_bool() == Some(true) {
            "chat prompts"
        } else {
            "raw prompts"
        }
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
    let t0 = Instant::now();
    let out = args.out.clone().unwrap_or_else(|| {
        let name = if tasks == NAMES {
            "all".into()
        } else {
            tasks.join("-")
        };
        PathBuf::from(format!("runs/reproduce-{name}"))
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
                jobs.push(Job {
                    task,
                    reward,
                    seed,
                    dir: runs_dir.join(format!("{task}-{reward}-seed{seed}")),
                    fresh: fresh_argv(&args, task, reward, seed, &runs_dir),
                });
            }
        }
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
            "Tasks {}; seeds {:?}; every seed under both rewards. Each task's child and settings:\n\n\
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
                &parse_train(&job.argv(args))?,
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
            let report = task_report(job.task, self.jobs, &dir, self.out, wall)?;
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
    let child_choice = cfg["child_choice"].as_str().unwrap_or("");
    let seeds: Vec<u64> = curves
        .iter()
        .filter(|c| c.reward() == Some(REWARDS[0]))
        .filter_map(|c| c.config["seed"].as_u64())
        .collect();
    let settings = settings_line(cfg);
    let preamble = match wall {
        Some(wall) => format!(
            "Task `{task}`, seeds {seeds:?}, {settings}. {child_choice}\n\nWall time of the whole \
             reproduction (training, evaluation, report): {}.",
            wall_time(wall)
        ),
        None => format!("Task `{task}`, seeds {seeds:?}, {settings}."),
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
        child: cfg["model"].as_str().unwrap_or("").to_string(),
        summaries,
        reward,
    })
}
