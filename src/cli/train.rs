//! `pgsrm train`: one run of RL on a task, into a run folder (see `pgsrm::run::folder`).

use crate::cli::embedder_args::EmbedderArgs;
use anyhow::{Context, Result, bail};
use pgsrm::assets::Locations;
use pgsrm::model::spec::{Model, load_model};
use pgsrm::ppo::config::Baseline;
use pgsrm::ppo::{Critic, PpoConfig, Trainer};
use pgsrm::run::RunDir;
use pgsrm::run::checkpoint::{ChildFiles, Keep, load_trainer_state, save_trainer_state};
use pgsrm::run::folder::{EPISODE_RULE, git_commit};
use pgsrm::run::progress::JobProgress;
use pgsrm::run::report::{Group, RunCurves, write_report};
use pgsrm::tasks::Task;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The child when no GPT-2 weights are found.
pub const FALLBACK_CHILD: &str = "smollm2-135m-instruct";

/// Settings of the SmolLM2 fallback that every task shares, scaled for short runs on 2 CPU
/// cores instead of the paper's 100,000 episodes (README, "Training runs"):
/// - the batch's mean reward as the baseline: a freshly initialised value head predicts values of
///   about +-2 from SmolLM2's hidden state, against rewards of 0.1 to 1, and needs far more
///   updates than a short run has before r - V means anything;
/// - no entropy bonus: MiniLM's rewards for the child's first answers differ by about 0.03, and a
///   0.01 entropy bonus outweighs that signal (entropy rose and the reward stayed flat in trials);
/// - prompts as user turns of the chat template: the instruct model answers in words that way.
pub const FALLBACK_BASELINE: Baseline = Baseline::BatchMean;
pub const FALLBACK_ENTROPY_COEF: f32 = 0.0;

/// The SmolLM2 fallback's settings that differ by task.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fallback {
    pub batch: usize,
    pub episodes: u64,
    pub actor_lr: f32,
}

/// The fallback's settings for `task`, chosen in trial runs (README, "Training runs", says why
/// each is what it is): 30 updates of 8 episodes, the highest learning rate at which the runs
/// learned without drifting far from the reference (colors, copy and negative at 2e-5; opposites'
/// KL to the reference reached 4 at 2e-5 and 1.4 at 1e-5 for the same reward). Categories learned
/// nothing at 2e-5, 1e-5 or 5e-6: within its 2 new tokens the child answers "This word" or "The
/// word" and never samples a category; it runs at 1e-5 like opposites, its sister task.
pub fn fallback(task: &str) -> Fallback {
    let actor_lr = match task {
        "opposites" | "categories" => 1e-5,
        _ => 2e-5,
    };
    Fallback {
        batch: 8,
        episodes: 240,
        actor_lr,
    }
}

/// Applies the SmolLM2 fallback's settings for `task` (before any flag given on the command
/// line).
fn fallback_settings(ppo: &mut PpoConfig, task: &str) {
    let f = fallback(task);
    ppo.batch_size = Some(f.batch);
    ppo.actor_lr = f.actor_lr;
    ppo.baseline = FALLBACK_BASELINE;
    ppo.entropy_coef = FALLBACK_ENTROPY_COEF;
    ppo.chat = true;
}
/// The paper's run length.
pub const PAPER_EPISODES: u64 = 100_000;

#[derive(clap::Args)]
pub struct Args {
    /// Task: colors, opposites, categories, copy or negative
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub task: Option<String>,
    /// Child: a folder, .gguf, Hugging Face name (gpt2, gpt2-large), smollm2-135m-instruct or
    /// random:<config>[:seed] (default: the task's GPT-2 when found, else smollm2-135m-instruct)
    #[arg(long, conflicts_with = "resume")]
    pub model: Option<String>,
    /// Reward shaping: pgsrm, binary, truncate or euclidean
    #[arg(long, default_value = "pgsrm", conflicts_with = "resume")]
    pub reward: String,
    /// Episodes in all (default: the paper's 100000 for GPT-2, the task's for the SmolLM2
    /// fallback); on --resume, the new total
    #[arg(long)]
    pub episodes: Option<u64>,
    /// Episodes per update (default: the task's; the SmolLM2 fallback's for the task)
    #[arg(long, conflicts_with = "resume")]
    pub batch_size: Option<usize>,
    /// New tokens per answer (default: the task's)
    #[arg(long, conflicts_with = "resume")]
    pub max_new_tokens: Option<usize>,
    /// Seed of prompt draws, sampling and the value head's init
    #[arg(long, default_value_t = 1, conflicts_with = "resume")]
    pub seed: u64,
    /// Run folder name under --runs-dir (default: <task>-<reward>-seed<seed>)
    #[arg(long, conflicts_with = "resume")]
    pub run_name: Option<String>,
    /// Folder the run folders go in
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Continue the run in this folder from its newest checkpoint
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Updates between checkpoints (the last update always writes one; 0: only the last)
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: u64,
    /// Checkpoints kept: older ones are deleted as new ones are written (0 keeps all)
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// The run's last checkpoint keeps the child and value head but not the optimiser moments:
    /// a third of the size, and the run cannot be continued from it
    #[arg(long, conflicts_with = "resume")]
    pub lean_last_checkpoint: bool,
    /// No progress line
    #[arg(long)]
    pub quiet: bool,
    /// Prompts as user turns of the child's chat template (default: on for chat models)
    #[arg(long)]
    pub chat: Option<bool>,
    /// Clipped surrogate with this range (default: the reference's plain policy gradient)
    #[arg(long)]
    pub clip_range: Option<f32>,
    #[arg(long)]
    pub ppo_epochs: Option<usize>,
    #[arg(long)]
    pub minibatches: Option<usize>,
    /// Advantage baseline: critic (r - V, the paper's) or batch-mean (r - mean r of the batch)
    #[arg(long, value_enum)]
    pub baseline: Option<pgsrm::ppo::config::Baseline>,
    /// Normalise advantages over each minibatch
    #[arg(long)]
    pub whiten_advantages: bool,
    /// Clip the value change by this much
    #[arg(long)]
    pub value_clip: Option<f32>,
    #[arg(long)]
    pub actor_lr: Option<f32>,
    #[arg(long)]
    pub critic_lr: Option<f32>,
    /// Weight of the entropy bonus in the actor loss
    #[arg(long)]
    pub entropy_coef: Option<f32>,
    /// KL coefficient at the start
    #[arg(long)]
    pub kl_coef: Option<f32>,
    /// Target KL of the adaptive controller
    #[arg(long)]
    pub kl_target: Option<f32>,
    /// Keep the KL coefficient fixed
    #[arg(long)]
    pub no_adaptive_kl: bool,
    #[command(flatten)]
    pub embedder: EmbedderArgs,
}

/// Which child, and the line that says why.
fn choose_child(args: &Args, task: &Task) -> (String, String) {
    if let Some(m) = &args.model {
        return (m.clone(), format!("child: {m} (--model)"));
    }
    let hub = match task.settings.child {
        "small" => "gpt2".to_string(),
        other => format!("gpt2-{other}"),
    };
    let loc = Locations::from_env();
    let found = loc
        .hf_snapshot(&hub, &["config.json", "model.safetensors"])
        .or_else(|_| {
            loc.hf_snapshot(
                &format!("openai-community/{hub}"),
                &["config.json", "model.safetensors"],
            )
        });
    match found {
        Ok(_) => (
            hub.clone(),
            format!(
                "child: {hub}, the paper's child for {}, found in the Hugging Face cache",
                task.name
            ),
        ),
        Err(_) => {
            let f = fallback(task.name);
            (
                FALLBACK_CHILD.to_string(),
                format!(
                    "child: {FALLBACK_CHILD}: no {hub} weights in the Hugging Face cache (the paper's \
                     child for {}), so the pretrained SmolLM2-135M-Instruct runs instead, with settings \
                     scaled to finish in minutes on a CPU (batch {}, {} episodes, actor lr {:e}, the \
                     batch's mean reward as the baseline, no entropy bonus, chat prompts; flags \
                     override each).\n  For the paper's child: put {hub} in the Hugging Face cache \
                     (huggingface-cli download openai-community/{hub}) or pass --model <folder with \
                     config.json + model.safetensors>.",
                    task.name, f.batch, f.episodes, f.actor_lr
                ),
            )
        }
    }
}

/// Everything a run is made of, resolved: written as config.json and read back on --resume.
pub fn resolve(args: &Args) -> Result<(Value, String)> {
    let task = pgsrm::tasks::by_name(args.task.as_deref().context("--task is required")?)?;
    pgsrm::reward::shaping::Shaping::from_name(&args.reward).context("--reward")?;
    let (model, why) = choose_child(args, &task);
    let is_fallback = model == FALLBACK_CHILD && args.model.is_none();
    let mut ppo = PpoConfig {
        shaping: args.reward.clone(),
        batch_size: Some(task.settings.batch_size),
        max_new_tokens: Some(task.settings.max_new_tokens),
        ..PpoConfig::default()
    };
    if is_fallback {
        fallback_settings(&mut ppo, task.name);
    }
    if let Some(b) = args.batch_size {
        ppo.batch_size = Some(b);
    }
    if let Some(n) = args.max_new_tokens {
        ppo.max_new_tokens = Some(n);
    }
    if let Some(c) = args.chat {
        ppo.chat = c;
    }
    if let Some(c) = args.clip_range {
        ppo.clip_range = Some(c);
    }
    if let Some(v) = args.ppo_epochs {
        ppo.ppo_epochs = v;
    }
    if let Some(v) = args.minibatches {
        ppo.minibatches = v;
    }
    if let Some(b) = args.baseline {
        ppo.baseline = b;
    }
    ppo.whiten_advantages = args.whiten_advantages;
    ppo.value_clip = args.value_clip;
    if let Some(v) = args.actor_lr {
        ppo.actor_lr = v;
    }
    if let Some(v) = args.critic_lr {
        ppo.critic_lr = v;
    }
    if let Some(v) = args.entropy_coef {
        ppo.entropy_coef = v;
    }
    if let Some(v) = args.kl_coef {
        ppo.kl_coef = v;
    }
    if let Some(v) = args.kl_target {
        ppo.kl_target = v;
    }
    ppo.adaptive_kl = !args.no_adaptive_kl;
    ppo.validate().context("PPO flags")?;
    let episodes = args.episodes.unwrap_or(if is_fallback {
        fallback(task.name).episodes
    } else {
        PAPER_EPISODES
    });
    if episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    let run_name = args
        .run_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-seed{}", task.name, args.reward, args.seed));
    if run_name.is_empty() || run_name.contains('/') || run_name.starts_with('.') {
        bail!("--run-name {run_name:?}: give a plain folder name");
    }
    let cfg = json!({
        "run_name": run_name,
        "task": task.name,
        "reward": args.reward,
        "model": model,
        "child_choice": why,
        "seed": args.seed,
        "episodes": episodes,
        "batch_size": ppo.batch_size,
        "max_new_tokens": ppo.max_new_tokens,
        "chat": ppo.chat,
        "embedder": args.embedder.embedder,
        "parent": format!("table:data/parents/{}.jsonl", task.name),
        "checkpoint_every": args.checkpoint_every,
        "lean_last_checkpoint": args.lean_last_checkpoint,
        "episode_log": EPISODE_RULE,
        "ppo": ppo,
        "git_commit": git_commit(),
        "pgsrm_version": env!("CARGO_PKG_VERSION"),
    });
    Ok((cfg, why))
}

/// Runs `pgsrm train`; returns the run folder.
pub fn train(args: &Args) -> Result<PathBuf> {
    train_with(args, None)
}

/// `train` as one run of a job: the progress line is the job's (`JobProgress`), whose current
/// run this is.
pub fn train_with(args: &Args, job: Option<&mut JobProgress>) -> Result<PathBuf> {
    // Set once per process: a second handler cannot be set, so every run of a job shares it.
    static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let stop = STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
        stop
    });
    train_until(args, stop, job)
}

fn num<T: serde::de::DeserializeOwned>(cfg: &Value, key: &str, path: &Path) -> Result<T> {
    serde_json::from_value(cfg[key].clone())
        .with_context(|| format!("{}/config.json: bad or missing {key:?}", path.display()))
}

fn train_until(
    args: &Args,
    stop: &AtomicBool,
    mut job: Option<&mut JobProgress>,
) -> Result<PathBuf> {
    let (mut dir, mut cfg, checkpoint) = match &args.resume {
        Some(path) => {
            let r = RunDir::resume(path)?;
            (r.dir, r.config, r.checkpoint)
        }
        None => {
            let (cfg, _) = resolve(args)?;
            let path = args
                .runs_dir
                .join(cfg["run_name"].as_str().unwrap_or("run"));
            (RunDir::create(&path, &cfg)?, cfg, None)
        }
    };
    let path = dir.path.clone();
    if let (Some(e), Some(_)) = (args.episodes, &args.resume) {
        cfg["episodes"] = e.into();
    }
    let task = pgsrm::tasks::by_name(&num::<String>(&cfg, "task", &path)?)?;
    let model_spec: String = num(&cfg, "model", &path)?;
    let ppo: PpoConfig = num(&cfg, "ppo", &path)?;
    let seed: u64 = num(&cfg, "seed", &path)?;
    let total: u64 = num(&cfg, "episodes", &path)?;
    let every: u64 = num(&cfg, "checkpoint_every", &path)?;
    if !args.quiet {
        eprintln!(
            "{}",
            cfg["child_choice"]
                .as_str()
                .unwrap_or("child: as configured")
        );
        eprintln!(
            "run {}: task {}, reward {}, seed {seed}, {total} episodes",
            path.display(),
            task.name,
            ppo.shaping
        );
    }
    let loaded = load_model(&model_spec)?;
    let reference = loaded.model.clone();
    let hidden = match &loaded.model {
        Model::Gpt2(m) => m.config.n_embd,
        Model::Llama(m) => m.config.hidden_size,
    };
    let child_files = ChildFiles::of(&loaded);
    let needs = pgsrm::reward::shaping::Shaping::from_name(&ppo.shaping)?.needs_embeddings();
    let embedder = if needs {
        Some(args.embedder.build()?)
    } else {
        None
    };
    let parent = Box::new(task.table_parent());
    let mut trainer = Trainer::new(
        ppo,
        loaded,
        reference,
        Critic::new(hidden, seed),
        task,
        embedder,
        parent,
        seed,
    )?;
    if let Some((step, ck)) = &checkpoint {
        let state = load_trainer_state(ck)?;
        trainer.restore(state)?;
        dir.truncate_after(*step)?;
        if args.episodes.is_some() {
            // The new total, so that a later --resume without --episodes keeps it.
            pgsrm::model::io::write_atomic(
                &path.join(pgsrm::run::folder::CONFIG),
                serde_json::to_string_pretty(&cfg)?.as_bytes(),
            )?;
        }
        if !args.quiet {
            eprintln!(
                "resumed from {} ({} episodes done)",
                ck.display(),
                trainer.episodes()
            );
        }
    } else if args.resume.is_some() {
        bail!(
            "{}: no checkpoint to resume from (the run stopped before its first)",
            path.display()
        );
    }
    let lean_last = cfg["lean_last_checkpoint"].as_bool().unwrap_or(false);
    let save = |trainer: &Trainer, dir: &RunDir, keep: Keep| -> Result<PathBuf> {
        let ck = dir.write_checkpoint(trainer.updates(), |d| {
            save_trainer_state(d, trainer.state(), &child_files, keep)
        })?;
        dir.prune_checkpoints(args.keep_checkpoints)?;
        Ok(ck)
    };
    let mut last_saved = trainer.updates();
    if let Some(j) = job.as_deref_mut() {
        j.resume_run(trainer.episodes());
    }
    while trainer.episodes() < total {
        if stop.load(Ordering::SeqCst) {
            let ck = save(&trainer, &dir, Keep::All)?;
            eprintln!(
                "\ninterrupted: checkpoint {} written; continue with --resume {}",
                ck.display(),
                path.display()
            );
            bail!("interrupted");
        }
        let stats = match trainer.update() {
            Ok(s) => s,
            Err(e) => {
                let kept = if last_saved > 0 {
                    format!(
                        "the last good checkpoint, {}/step-{last_saved}, is kept",
                        path.display()
                    )
                } else {
                    "no checkpoint was written yet".to_string()
                };
                return Err(e).with_context(|| {
                    format!(
                        "training stopped at update {} ({kept})",
                        trainer.updates() + 1
                    )
                });
            }
        };
        let mut line = serde_json::to_value(&stats)?;
        let episodes = line
            .as_object_mut()
            .and_then(|m| m.remove("episodes"))
            .unwrap_or(Value::Null);
        dir.append_metrics(&line)?;
        dir.append_episodes(
            stats.update,
            episodes.as_array().map(Vec::as_slice).unwrap_or(&[]),
        )?;
        let done = trainer.episodes() >= total;
        if done || (every > 0 && stats.update % every == 0) {
            let keep = if done && lean_last {
                Keep::NoMoments
            } else {
                Keep::All
            };
            save(&trainer, &dir, keep)?;
            last_saved = trainer.updates();
        }
        let progress = match job.as_deref_mut() {
            Some(j) => {
                j.record_update(
                    stats.episodes.len() as u64,
                    stats.seconds as f64,
                    stats.episode,
                );
                j.line(stats.episodes_per_s, stats.reward_mean, stats.losses.kl)
            }
            None => format!(
                "update {} | episodes {}/{} | {:.2} episodes/s | reward {:.4} | KL {:.5}",
                stats.update,
                stats.episode,
                total,
                stats.episodes_per_s,
                stats.reward_mean,
                stats.losses.kl
            ),
        };
        if !args.quiet {
            eprint!("\r{progress}   ");
            let _ = std::io::stderr().flush();
        }
    }
    let curves = RunCurves::load(&path)?;
    let name = curves.name.clone();
    write_report(
        &[Group {
            name,
            runs: vec![&curves],
        }],
        &path,
        &format!("Run {}", path.display()),
        "",
    )?;
    if !args.quiet {
        eprintln!(
            "\ndone: {} (plots: reward, kl, entropy .svg/.png; report.md)",
            path.display()
        );
    }
    Ok(path)
}

pub fn run(args: Args) -> Result<()> {
    train(&args).map(|_| ())
}
