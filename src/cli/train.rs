//! `pgsrm train`: one run of RL on a task, into a run folder (see `pgsrm::run::folder`). The run
//! itself is `pgsrm::run::train`; this parses its flags and prints its progress.

use crate::cli::embedder_args::EmbedderArgs;
use anyhow::Result;
use pgsrm::device::Device;
use pgsrm::reward::Embedder;
use pgsrm::run::progress::JobProgress;
use pgsrm::run::train::{Event, TrainOptions, train_run};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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

impl Args {
    /// The run's settings these flags give.
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            task: self.task.clone(),
            model: self.model.clone(),
            reward: self.reward.clone(),
            episodes: self.episodes,
            batch_size: self.batch_size,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            run_name: self.run_name.clone(),
            runs_dir: self.runs_dir.clone(),
            resume: self.resume.clone(),
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            lean_last_checkpoint: self.lean_last_checkpoint,
            chat: self.chat,
            clip_range: self.clip_range,
            ppo_epochs: self.ppo_epochs,
            minibatches: self.minibatches,
            baseline: self.baseline,
            whiten_advantages: self.whiten_advantages,
            value_clip: self.value_clip,
            actor_lr: self.actor_lr,
            critic_lr: self.critic_lr,
            entropy_coef: self.entropy_coef,
            kl_coef: self.kl_coef,
            kl_target: self.kl_target,
            no_adaptive_kl: self.no_adaptive_kl,
            embedder: self.embedder.embedder.clone(),
        }
    }

    /// The PGSRM embedder the flags name, on the policy's device when it can run there (the
    /// sentence encoders), else on the host.
    fn embedder_on(&self, device: &Device) -> Result<Box<dyn Embedder>> {
        self.embedder.build_on(device)
    }
}

/// Runs `pgsrm train`; returns the run folder.
pub fn train(args: &Args) -> Result<PathBuf> {
    // The device first: a missing driver or device stops the run before any folder is made.
    let device = Device::open(args.embedder.device, 0)?;
    train_with(args, &device, None)
}

/// `train` on `device` (the command's), as run `k` of a job when given: the progress line is the
/// job's (`JobProgress`), shared with the job's other runs.
pub fn train_with(
    args: &Args,
    device: &Device,
    job: Option<(&Mutex<JobProgress>, usize)>,
) -> Result<PathBuf> {
    // Set once per process: a second handler cannot be set, so every run of a job shares it.
    static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let stop = STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
        stop
    });
    let quiet = args.quiet;
    let mut print = |event: Event| match event {
        Event::Started {
            child_choice,
            path,
            task,
            reward,
            seed,
            total,
            device,
        } => {
            if !quiet {
                eprintln!("{child_choice}");
                eprintln!(
                    "run {}: task {task}, reward {reward}, seed {seed}, {total} episodes, on {device}",
                    path.display()
                );
            }
        }
        Event::Resumed {
            checkpoint,
            episodes,
        } => {
            if let Some((j, k)) = job {
                lock(j).resume_run(k, episodes);
            }
            if !quiet {
                eprintln!(
                    "resumed from {} ({episodes} episodes done)",
                    checkpoint.display()
                );
            }
        }
        Event::Update { stats, total } => {
            let line = match job {
                Some((j, k)) => {
                    let mut j = lock(j);
                    j.record_update(
                        k,
                        stats.episodes.len() as u64,
                        stats.seconds as f64,
                        stats.episode,
                    );
                    j.line(k, stats.episodes_per_s, stats.reward_mean, stats.losses.kl)
                }
                None => format!(
                    "update {} | episodes {}/{total} | {:.2} episodes/s | reward {:.4} | KL {:.5}",
                    stats.update,
                    stats.episode,
                    stats.episodes_per_s,
                    stats.reward_mean,
                    stats.losses.kl
                ),
            };
            if !quiet {
                eprint!("\r{line}   ");
                let _ = std::io::stderr().flush();
            }
        }
        Event::Interrupted { .. } => eprintln!(),
        Event::Done { path } => {
            if !quiet {
                eprintln!(
                    "\ndone: {} (plots: reward, kl, entropy .svg/.png; report.md)",
                    path.display()
                );
            }
        }
    };
    train_run(
        &args.options(),
        device,
        &|d| args.embedder_on(d),
        stop,
        &mut print,
    )
}

pub fn run(args: Args) -> Result<()> {
    train(&args).map(|_| ())
}

/// What a job's runs share (its progress, its finished runs), also after a run that held it
/// panicked: the others still report what they did.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
