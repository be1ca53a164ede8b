//! The optimiser steps of one update, as every backend runs them: `ppo_epochs` passes over the
//! batch, each cut into `minibatches` slices after a shuffle, and the update's losses the mean of
//! its steps'. The backends share this so that the same generator state gives the same steps.

use crate::ppo::loss::UpdateLosses;
use crate::rng::Rng;

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
