//! `pgsrm bench --job update`: whole trainer updates of a child on a device (sampling, the task's
//! parent table, the reward, the policy update), timed after warm-up updates, with where each
//! update's time went (`ppo::PhaseSeconds`).

use crate::device::{Device, LaunchCounts};
use crate::model::spec::load_model;
use crate::ppo::{PhaseSeconds, PpoConfig};
use crate::reward::Embedder;
use crate::run::train::trainer_on;
use anyhow::{Result, bail};
use serde::Serialize;

/// Updates run before the timed ones: kernels compile, caches fill, buffers grow.
pub const WARMUP_UPDATES: usize = 2;

/// What to run: a child (as `--model` takes it), a task, a batch and answer length, a reward.
pub struct UpdateJob {
    pub model: String,
    pub task: String,
    pub batch: usize,
    pub new_tokens: usize,
    pub reward: String,
    pub chat: bool,
    pub runs: usize,
}

/// The medians over the timed updates.
#[derive(Debug, Serialize)]
pub struct UpdateFigure {
    pub device: String,
    pub model: String,
    pub task: String,
    pub batch: usize,
    pub new_tokens: usize,
    pub reward: String,
    pub updates: usize,
    pub seconds_per_update: f64,
    pub episodes_per_s: f64,
    /// The median of each phase on its own (they need not add up to `seconds_per_update`).
    pub phase_seconds: PhaseSeconds,
    /// On a device: the kernels launched one by one, the graphs launched, and the copies and
    /// memsets asked for one by one, per update (the median of each).
    pub launches_per_update: Option<LaunchCounts>,
    /// On a device: the buffers an update made (the median).
    pub buffers_per_update: Option<u64>,
}

/// The middle of `x` (not empty) in the order `cmp` gives.
fn median<T: Copy>(mut x: Vec<T>, cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) -> T {
    x.sort_by(cmp);
    x[x.len() / 2]
}

/// Runs `WARMUP_UPDATES` then `job.runs` updates of `job` on `device`; `embedder` gives the
/// reward's embedder when the reward needs one.
pub fn update_throughput(
    device: &Device,
    job: &UpdateJob,
    embedder: Option<Box<dyn Embedder>>,
) -> Result<UpdateFigure> {
    if job.runs == 0 || job.batch == 0 || job.new_tokens == 0 {
        bail!("--runs, --batch and --new-tokens must be at least 1");
    }
    let loaded = load_model(&job.model)?;
    let task = crate::tasks::by_name(&job.task)?;
    let cfg = PpoConfig {
        shaping: job.reward.clone(),
        batch_size: Some(job.batch),
        max_new_tokens: Some(job.new_tokens),
        chat: job.chat,
        ..PpoConfig::default()
    };
    let mut trainer = trainer_on(device, cfg, loaded, task, embedder, 1)?;
    for _ in 0..WARMUP_UPDATES {
        trainer.update()?;
    }
    let mut stats = Vec::with_capacity(job.runs);
    let mut launches = Vec::with_capacity(job.runs);
    let mut buffers = Vec::with_capacity(job.runs);
    let counts = || device.launch_counts();
    for _ in 0..job.runs {
        let (before, made) = (counts(), device.buffers_made());
        stats.push(trainer.update()?);
        launches.extend(counts().zip(before).map(|(after, before)| after - before));
        buffers.extend(
            device
                .buffers_made()
                .zip(made)
                .map(|(after, before)| after - before),
        );
    }
    let buffers_per_update = (!buffers.is_empty()).then(|| median(buffers, u64::cmp));
    let launches_per_update = (!launches.is_empty()).then(|| {
        let mid = |f: fn(&LaunchCounts) -> u64| median(launches.iter().map(f).collect(), u64::cmp);
        LaunchCounts {
            kernels: mid(|c| c.kernels),
            graphs: mid(|c| c.graphs),
            copies: mid(|c| c.copies),
            memsets: mid(|c| c.memsets),
        }
    });
    let phase = |f: fn(&PhaseSeconds) -> f32| {
        median(
            stats.iter().map(|s| f(&s.phase_seconds)).collect(),
            f32::total_cmp,
        )
    };
    let seconds = median(stats.iter().map(|s| s.seconds).collect(), f32::total_cmp) as f64;
    Ok(UpdateFigure {
        device: device.name(),
        model: job.model.clone(),
        task: job.task.clone(),
        batch: job.batch,
        new_tokens: job.new_tokens,
        reward: job.reward.clone(),
        updates: job.runs,
        seconds_per_update: seconds,
        episodes_per_s: job.batch as f64 / seconds,
        launches_per_update,
        buffers_per_update,
        phase_seconds: PhaseSeconds {
            rollout: phase(|p| p.rollout),
            reward: phase(|p| p.reward),
            reference: phase(|p| p.reference),
            actor: phase(|p| p.actor),
            optimiser: phase(|p| p.optimiser),
        },
    })
}
