//! The optimiser steps of one update, as every backend runs them: `ppo_epochs` passes over the
//! batch, each cut into `minibatches` slices after a shuffle; each step's targets (values before
//! the update, returns, advantages, reference log-probs) and its checks; and the update's losses
//! the mean of its steps'. The backends share this so that the same generator state and batch
//! give the same steps.

use crate::ppo::config::{Baseline, PpoConfig};
use crate::ppo::loss::{ActorLoss, Episode, UpdateLosses, whiten};
use crate::ppo::trainer::PolicyBackend;
use crate::rng::Rng;
use anyhow::{Result, bail};

/// The episodes (indices into a batch of `n`) of each optimiser step, in order: per epoch a
/// Fisher-Yates shuffle drawn from `rng` (none with one minibatch), then `minibatches` contiguous
/// slices of the shuffled order.
pub fn step_plan(n: usize, epochs: usize, minibatches: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mb = minibatches.min(n).max(1);
    let mut order: Vec<usize> = (0..n).collect();
    let mut plan = Vec::with_capacity(epochs * mb);
    for _ in 0..epochs {
        if mb > 1 {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
        }
        for k in 0..mb {
            plan.push(order[k * n / mb..(k + 1) * n / mb].to_vec());
        }
    }
    plan
}

impl UpdateLosses {
    /// Adds one of `steps` steps' losses to this mean (token counts add up).
    pub fn add_step(&mut self, s: &UpdateLosses, steps: usize) {
        let add = |a: &mut f32, b: f32| *a += b / steps as f32;
        add(&mut self.policy_loss, s.policy_loss);
        add(&mut self.value_loss, s.value_loss);
        add(&mut self.entropy, s.entropy);
        add(&mut self.kl, s.kl);
        add(&mut self.actor_loss, s.actor_loss);
        add(&mut self.critic_loss, s.critic_loss);
        add(&mut self.approx_kl, s.approx_kl);
        add(&mut self.clip_fraction, s.clip_fraction);
        add(&mut self.actor_grad_norm, s.actor_grad_norm);
        add(&mut self.critic_grad_norm, s.critic_grad_norm);
        add(&mut self.value_mean, s.value_mean);
        self.tokens += s.tokens;
    }
}

/// The batch's mean reward, when the baseline is that (`Baseline::BatchMean`).
pub fn batch_mean(cfg: &PpoConfig, episodes: &[Episode]) -> Option<f32> {
    (cfg.baseline == Baseline::BatchMean).then(|| {
        episodes.iter().map(|e| e.reward as f64).sum::<f64>() as f32 / episodes.len() as f32
    })
}

/// What one step's losses take besides the policy's own pass, the same on every backend.
pub struct StepTargets {
    /// (B) each episode's value before the update, and its return (the reward).
    pub old_values: Vec<f32>,
    pub returns: Vec<f32>,
    /// (M) each scored token's advantage and its log-probability under the reference.
    pub advantages: Vec<f32>,
    pub ref_logprobs: Vec<f32>,
}

impl StepTargets {
    /// The targets of the step on `episodes[idx]`, whose scored tokens belong to the rows `rows`
    /// (M); `values` (B) are the step's own values, which stand for the values before the update
    /// when the whole update is this one step (`old_values` none); `ref_lp` holds every episode's
    /// reference log-probs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &PpoConfig,
        episodes: &[Episode],
        idx: &[usize],
        rows: &[usize],
        values: &[f32],
        old_values: Option<&[f32]>,
        batch_mean: Option<f32>,
        ref_lp: &[Vec<f32>],
    ) -> StepTargets {
        let old_values: Vec<f32> = match old_values {
            Some(v) => idx.iter().map(|&i| v[i]).collect(),
            None => values.to_vec(),
        };
        let returns: Vec<f32> = idx.iter().map(|&i| episodes[i].reward).collect();
        // A = r - V (or r - mean r), one scalar per sequence on every one of its tokens; V is
        // detached.
        let mut advantages: Vec<f32> = rows
            .iter()
            .map(|&r| returns[r] - batch_mean.unwrap_or(old_values[r]))
            .collect();
        if cfg.whiten_advantages {
            whiten(&mut advantages);
        }
        let ref_logprobs = idx
            .iter()
            .flat_map(|&i| ref_lp[i].iter().copied())
            .collect();
        StepTargets {
            old_values,
            returns,
            advantages,
            ref_logprobs,
        }
    }

    /// The mean of the values before the update, as the update reports it.
    pub fn value_mean(&self) -> f32 {
        self.old_values.iter().sum::<f32>() / self.old_values.len().max(1) as f32
    }
}

/// Refuses a step whose losses are not all finite, before anything is applied.
pub fn check_finite(actor: &ActorLoss, value_loss: f32, critic_loss: f32) -> Result<()> {
    for (name, x) in [
        ("policy loss", actor.policy),
        ("entropy", actor.entropy),
        ("KL", actor.kl),
        ("actor loss", actor.actor),
        ("value loss", value_loss),
        ("critic loss", critic_loss),
    ] {
        if !x.is_finite() {
            bail!("the {name} is {x}; nothing was applied to the weights");
        }
    }
    Ok(())
}

impl StepTargets {
    /// What the step reports: the actor's and critic's losses, the KL coefficient it ran with,
    /// the gradient norms (actor, critic) before clipping and the scored tokens.
    pub fn losses(
        &self,
        actor: &ActorLoss,
        (value_loss, critic_loss): (f32, f32),
        kl_coef: f32,
        (actor_grad_norm, critic_grad_norm): (f32, f32),
        tokens: usize,
    ) -> UpdateLosses {
        UpdateLosses {
            policy_loss: actor.policy,
            value_loss,
            entropy: actor.entropy,
            kl: actor.kl,
            kl_coef,
            actor_loss: actor.actor,
            critic_loss,
            approx_kl: actor.approx_kl,
            clip_fraction: actor.clip_fraction,
            actor_grad_norm,
            critic_grad_norm,
            value_mean: self.value_mean(),
            tokens,
        }
    }
}

/// Runs `update` on `backend` as all or nothing: on an error the backend and the generator are
/// as they were. An update of one step checks everything before it applies anything; one of
/// several (`cfg`'s epochs times minibatches, for `episodes` episodes) keeps a copy of the
/// backend's state to fall back to when a later step fails.
pub fn all_or_nothing<B: PolicyBackend>(
    backend: &mut B,
    cfg: &PpoConfig,
    episodes: usize,
    rng: &mut Rng,
    update: impl FnOnce(&mut B, &mut Rng) -> Result<UpdateLosses>,
) -> Result<UpdateLosses> {
    if episodes == 0 {
        bail!("an update needs at least one episode");
    }
    let saved = (step_count(cfg, episodes) > 1)
        .then(|| backend.state())
        .transpose()?;
    let rng_saved = rng.clone();
    update(backend, rng).or_else(|e| {
        if let Some(s) = saved {
            backend.restore(s)?;
        }
        *rng = rng_saved;
        Err(e)
    })
}

/// Optimiser steps in an update of `n` episodes: epochs times minibatches (a minibatch holds at
/// least one episode).
pub fn step_count(cfg: &PpoConfig, n: usize) -> usize {
    cfg.ppo_epochs * cfg.minibatches.min(n)
}

/// Runs `step` on the episodes of each step of an update of `n` (`step_plan`, from `rng`) and
/// returns the mean of their losses, reported with the KL coefficient `kl_coef`.
pub fn mean_of_steps(
    cfg: &PpoConfig,
    n: usize,
    kl_coef: f32,
    rng: &mut Rng,
    mut step: impl FnMut(&[usize]) -> Result<UpdateLosses>,
) -> Result<UpdateLosses> {
    let steps = step_count(cfg, n);
    let mut total = UpdateLosses::default();
    for idx in step_plan(n, cfg.ppo_epochs, cfg.minibatches, rng) {
        total.add_step(&step(&idx)?, steps);
    }
    total.kl_coef = kl_coef;
    Ok(total)
}
