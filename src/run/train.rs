//! One training run assembled from its settings: the child chosen, the run folder made (or
//! resumed), the backend opened, the trainer built, updates run with their metrics, episodes and
//! checkpoints written, and the report drawn. `pgsrm train` and `pgsrm reproduce` parse flags
//! into `TrainOptions` and print the `Event`s this sends.

use crate::assets::Locations;
use crate::device::Device;
use crate::files::write_atomic;
use crate::model::spec::{ChildFiles, Loaded, load_model};
use crate::ppo::config::Baseline;
use crate::ppo::trainer::prompt_bos;
use crate::ppo::{Critic, PpoConfig, Trainer, UpdateStats};
use crate::reward::Embedder;
use crate::reward::parent::TableParent;
use crate::reward::shaping::Shaping;
use crate::run::RunDir;
use crate::run::checkpoint::{Keep, load_trainer_state, save_trainer_state};
use crate::run::folder::{CONFIG, EPISODE_RULE, git_commit};
use crate::run::report::{Group, RunCurves, write_report};
use crate::tasks::Task;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
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

/// The paper's run length.
pub const PAPER_EPISODES: u64 = 100_000;

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

/// Applies the SmolLM2 fallback's settings for `task` (before any setting given explicitly).
fn fallback_settings(ppo: &mut PpoConfig, task: &str) {
    let f = fallback(task);
    ppo.batch_size = Some(f.batch);
    ppo.actor_lr = f.actor_lr;
    ppo.baseline = FALLBACK_BASELINE;
    ppo.entropy_coef = FALLBACK_ENTROPY_COEF;
    ppo.chat = true;
}

/// A run's settings; `None` takes the default (the task's, or the fallback's for the task).
/// Each field is the `pgsrm train` flag of the same name.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub task: Option<String>,
    pub model: Option<String>,
    pub reward: String,
    pub episodes: Option<u64>,
    pub batch_size: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub seed: u64,
    pub run_name: Option<String>,
    pub runs_dir: PathBuf,
    pub resume: Option<PathBuf>,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub lean_last_checkpoint: bool,
    pub chat: Option<bool>,
    pub clip_range: Option<f32>,
    pub ppo_epochs: Option<usize>,
    pub minibatches: Option<usize>,
    pub baseline: Option<Baseline>,
    pub whiten_advantages: bool,
    pub value_clip: Option<f32>,
    pub actor_lr: Option<f32>,
    pub critic_lr: Option<f32>,
    pub entropy_coef: Option<f32>,
    pub kl_coef: Option<f32>,
    pub kl_target: Option<f32>,
    pub no_adaptive_kl: bool,
    /// The embedder's name, recorded in config.json (the embedder itself is given to `train_run`).
    pub embedder: String,
}

/// What a run tells as it goes.
pub enum Event<'a> {
    /// The child and why it was chosen; the run folder, task, reward, seed and episode total.
    Started {
        child_choice: &'a str,
        path: &'a Path,
        task: &'a str,
        reward: &'a str,
        seed: u64,
        total: u64,
        device: &'a str,
    },
    /// Continued from `checkpoint` with `episodes` done.
    Resumed { checkpoint: &'a Path, episodes: u64 },
    /// One update done (of `total` episodes).
    Update { stats: &'a UpdateStats, total: u64 },
    /// Stopped on request after writing `checkpoint`.
    Interrupted { checkpoint: &'a Path },
    /// The run is complete.
    Done { path: &'a Path },
}

/// The child a run trains, and why it is that one.
struct ChildChoice {
    /// What `load_model` takes.
    model: String,
    /// The lines `pgsrm train` prints first: the child, why, and how to get the paper's.
    why: String,
    /// The reason in a few words, for reports and plans (`child_reason` in config.json).
    reason: String,
}

/// The paper's GPT-2 for a task's `child` setting (`small`, `large`): its Hugging Face name and
/// the name the paper gives it.
fn paper_child(child: &str) -> (String, String) {
    match child {
        "small" => ("gpt2".into(), "GPT-2 small".into()),
        other => (format!("gpt2-{other}"), format!("GPT-2 {other}")),
    }
}

/// Which child: `--model`, else the task's GPT-2 when its weights are in the Hugging Face cache,
/// else the SmolLM2 fallback.
fn choose_child(opts: &TrainOptions, task: &Task) -> ChildChoice {
    if let Some(m) = &opts.model {
        return ChildChoice {
            model: m.clone(),
            why: format!("child: {m} (--model)"),
            reason: "given by --model".into(),
        };
    }
    let (hub, paper_name) = paper_child(task.settings.child);
    let loc = Locations::from_env();
    let files = ["config.json", "model.safetensors"];
    let found = loc
        .hf_snapshot(&hub, &files)
        .or_else(|_| loc.hf_snapshot(&format!("openai-community/{hub}"), &files));
    if found.is_ok() {
        return ChildChoice {
            model: hub.clone(),
            why: format!(
                "child: {hub}, the paper's child for {}, found in the Hugging Face cache",
                task.name
            ),
            reason: format!("{paper_name}, the paper's child, found in the Hugging Face cache"),
        };
    }
    // The fallback's scaled settings, less those a flag sets.
    let f = fallback(task.name);
    let all = [
        (opts.batch_size.is_none(), format!("batch {}", f.batch)),
        (opts.episodes.is_none(), format!("{} episodes", f.episodes)),
        (
            opts.actor_lr.is_none(),
            format!("actor lr {:e}", f.actor_lr),
        ),
        (
            opts.baseline.is_none(),
            "the batch's mean reward as the baseline".into(),
        ),
        (opts.entropy_coef.is_none(), "no entropy bonus".into()),
        (opts.chat.is_none(), "chat prompts".into()),
    ];
    let count = all.len();
    let scaled: Vec<String> = all
        .into_iter()
        .filter_map(|(default, s)| default.then_some(s))
        .collect();
    let settings = match scaled.len() {
        0 => "with the settings its flags give".to_string(),
        n if n == count => format!(
            "with settings scaled to finish in minutes on a CPU ({}; flags override each)",
            scaled.join(", ")
        ),
        _ => format!(
            "with the short CPU runs' settings where no flag sets them ({})",
            scaled.join(", ")
        ),
    };
    ChildChoice {
        model: FALLBACK_CHILD.to_string(),
        why: format!(
            "child: {FALLBACK_CHILD}: no {hub} weights in the Hugging Face cache (the paper's \
             child for {}), so the pretrained SmolLM2-135M-Instruct runs instead, {settings}.\n  \
             For the paper's child: put {hub} in the Hugging Face cache (huggingface-cli download \
             openai-community/{hub}) or pass --model <folder with config.json + \
             model.safetensors>.",
            task.name
        ),
        reason: format!(
            "{paper_name} ({hub}) weights not found in the Hugging Face cache: \
             SmolLM2-135M-Instruct"
        ),
    }
}

/// Everything a run is made of, resolved: written as config.json and read back on resume.
pub fn resolve(opts: &TrainOptions) -> Result<Value> {
    let task = crate::tasks::by_name(opts.task.as_deref().context("--task is required")?)?;
    Shaping::from_name(&opts.reward).context("--reward")?;
    let ChildChoice { model, why, reason } = choose_child(opts, &task);
    let is_fallback = model == FALLBACK_CHILD && opts.model.is_none();
    let mut ppo = PpoConfig {
        shaping: opts.reward.clone(),
        batch_size: Some(task.settings.batch_size),
        max_new_tokens: Some(task.settings.max_new_tokens),
        ..PpoConfig::default()
    };
    if is_fallback {
        fallback_settings(&mut ppo, task.name);
    }
    fn set<T: Copy>(dst: &mut T, v: Option<T>) {
        if let Some(v) = v {
            *dst = v;
        }
    }
    if opts.batch_size.is_some() {
        ppo.batch_size = opts.batch_size;
    }
    if opts.max_new_tokens.is_some() {
        ppo.max_new_tokens = opts.max_new_tokens;
    }
    if opts.clip_range.is_some() {
        ppo.clip_range = opts.clip_range;
    }
    set(&mut ppo.chat, opts.chat);
    set(&mut ppo.ppo_epochs, opts.ppo_epochs);
    set(&mut ppo.minibatches, opts.minibatches);
    set(&mut ppo.baseline, opts.baseline);
    ppo.whiten_advantages = opts.whiten_advantages;
    ppo.value_clip = opts.value_clip;
    set(&mut ppo.actor_lr, opts.actor_lr);
    set(&mut ppo.critic_lr, opts.critic_lr);
    set(&mut ppo.entropy_coef, opts.entropy_coef);
    set(&mut ppo.kl_coef, opts.kl_coef);
    set(&mut ppo.kl_target, opts.kl_target);
    ppo.adaptive_kl = !opts.no_adaptive_kl;
    ppo.validate().context("PPO flags")?;
    let episodes = opts.episodes.unwrap_or(if is_fallback {
        fallback(task.name).episodes
    } else {
        PAPER_EPISODES
    });
    if episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    let run_name = opts
        .run_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-seed{}", task.name, opts.reward, opts.seed));
    if run_name.is_empty() || run_name.contains('/') || run_name.starts_with('.') {
        bail!("--run-name {run_name:?}: give a plain folder name");
    }
    Ok(json!({
        "run_name": run_name,
        "task": task.name,
        "reward": opts.reward,
        "model": model,
        "child_choice": why,
        "child_reason": reason,
        "seed": opts.seed,
        "episodes": episodes,
        "batch_size": ppo.batch_size,
        "max_new_tokens": ppo.max_new_tokens,
        "chat": ppo.chat,
        "embedder": opts.embedder,
        "parent": format!("table:data/parents/{}.jsonl", task.name),
        "checkpoint_every": opts.checkpoint_every,
        "lean_last_checkpoint": opts.lean_last_checkpoint,
        "episode_log": EPISODE_RULE,
        "ppo": ppo,
        "git_commit": git_commit(),
        "pgsrm_version": env!("CARGO_PKG_VERSION"),
    }))
}

fn field<T: serde::de::DeserializeOwned>(cfg: &Value, key: &str, path: &Path) -> Result<T> {
    serde_json::from_value(cfg[key].clone())
        .with_context(|| format!("{}/config.json: bad or missing {key:?}", path.display()))
}

/// A trainer for `child` on `device`, its value head initialised from `seed`, its reference a
/// frozen copy of the child, its parent the task's table.
pub fn trainer_on(
    device: &Device,
    ppo: PpoConfig,
    child: Loaded,
    task: Task,
    embedder: Option<Box<dyn Embedder>>,
    seed: u64,
) -> Result<Trainer> {
    let files = ChildFiles::of(&child);
    let bos = prompt_bos(&child.model, child.bos);
    let critic = Critic::new(child.model.hidden_size(), seed);
    let parent = Box::new(TableParent::for_task(&task));
    let backend = device.policy(ppo.clone(), child.model, critic, child.eos)?;
    Trainer::new(ppo, backend, &files, bos, task, embedder, parent, seed)
}

/// Runs (or continues) the run `opts` describes until its episode total or until `stop` is
/// set (then a checkpoint is written and the run stops with an error saying so), on `device`,
/// which the command opened (a missing driver or device stopped it before any folder was made).
/// `embedder` makes the PGSRM embedder when the reward needs one, on the same device. Returns
/// the run folder.
pub fn train_run(
    opts: &TrainOptions,
    device: &Device,
    embedder: &dyn Fn(&Device) -> Result<Box<dyn Embedder>>,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<PathBuf> {
    let device_name = device.name();
    let (mut dir, mut cfg, checkpoint) = match &opts.resume {
        Some(path) => {
            let r = RunDir::resume(path)?;
            (r.dir, r.config, r.checkpoint)
        }
        None => {
            let cfg = resolve(opts)?;
            let path = opts
                .runs_dir
                .join(cfg["run_name"].as_str().unwrap_or("run"));
            (RunDir::create(&path, &cfg)?, cfg, None)
        }
    };
    let path = dir.path.clone();
    if let (Some(e), Some(_)) = (opts.episodes, &opts.resume) {
        cfg["episodes"] = e.into();
    }
    let task = crate::tasks::by_name(&field::<String>(&cfg, "task", &path)?)?;
    let ppo: PpoConfig = field(&cfg, "ppo", &path)?;
    let seed: u64 = field(&cfg, "seed", &path)?;
    let total: u64 = field(&cfg, "episodes", &path)?;
    let every: u64 = field(&cfg, "checkpoint_every", &path)?;
    on_event(Event::Started {
        child_choice: cfg["child_choice"]
            .as_str()
            .unwrap_or("child: as configured"),
        path: &path,
        task: task.name,
        reward: &ppo.shaping,
        seed,
        total,
        device: &device_name,
    });
    let child = load_model(&field::<String>(&cfg, "model", &path)?)?;
    let child_files = ChildFiles::of(&child);
    let embedder = if Shaping::from_name(&ppo.shaping)?.needs_embeddings() {
        Some(embedder(device)?)
    } else {
        None
    };
    let mut trainer = trainer_on(device, ppo, child, task, embedder, seed)?;
    if let Some((step, ck)) = &checkpoint {
        trainer.restore(load_trainer_state(ck)?)?;
        dir.truncate_after(*step)?;
        on_event(Event::Resumed {
            checkpoint: ck,
            episodes: trainer.episodes(),
        });
    } else if opts.resume.is_some() {
        bail!(
            "{}: no checkpoint to resume from (the run stopped before its first)",
            path.display()
        );
    }
    // Every device the run has run on, in order: a checkpoint continues on any backend.
    let mut devices: Vec<Value> = cfg["devices"].as_array().cloned().unwrap_or_default();
    devices.push(device_name.into());
    cfg["devices"] = devices.into();
    write_atomic(
        &path.join(CONFIG),
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    let lean_last = cfg["lean_last_checkpoint"].as_bool().unwrap_or(false);
    let save = |trainer: &Trainer, dir: &RunDir, keep: Keep| -> Result<PathBuf> {
        let ck = dir.write_checkpoint(trainer.updates(), |d| {
            save_trainer_state(d, trainer.state()?, &child_files, keep)
        })?;
        dir.prune_checkpoints(opts.keep_checkpoints)?;
        Ok(ck)
    };
    let mut last_saved = trainer.updates();
    while trainer.episodes() < total {
        if stop.load(Ordering::SeqCst) {
            let ck = save(&trainer, &dir, Keep::All)?;
            on_event(Event::Interrupted { checkpoint: &ck });
            bail!(
                "interrupted: checkpoint {} written; continue with --resume {}",
                ck.display(),
                path.display()
            );
        }
        let (next, batch) = (trainer.updates() + 1, trainer.batch_size());
        let stats = trainer.update().with_context(|| {
            let kept = if last_saved > 0 {
                format!(
                    "the last good checkpoint, {}/step-{last_saved}, is kept",
                    path.display()
                )
            } else {
                "no checkpoint was written yet".to_string()
            };
            format!("training stopped at update {next}, a batch of {batch} episodes ({kept})")
        })?;
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
        on_event(Event::Update {
            stats: &stats,
            total,
        });
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
    on_event(Event::Done { path: &path });
    Ok(path)
}
