//! The CPU backend's passes for the trainer's policy (`ppo::policy::Passes`): batched rollouts
//! that keep their forward pass, the frozen reference's log-probs through its prompt cache, and
//! the update's forward with the value head, the losses of `ppo::loss`, backward, and two AdamW
//! optimisers with gradient clipping. `ppo::policy::Policy` runs the update's steps over them.

use crate::cpu::model::{self, Acts, Grads, KeptRollout, params_mut, train_forward};
use crate::cpu::refcache::RefCache;
use crate::model::spec::Model;
use crate::ppo::adamw::{AdamW, clip_coef, clip_grad_norm, grad_norm};
use crate::ppo::config::PpoConfig;
use crate::ppo::loss::{
    ActorInputs, ActorLoss, Critic, Episode, actor_loss, critic_loss, kept_tokens,
};
use crate::ppo::phases::Clock;
use crate::ppo::policy::{Passes, Policy, ScoredBatch, check_state_fits, starting_optimisers};
use crate::ppo::steps::StepTargets;
use crate::ppo::trainer::PolicyState;
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams};
use crate::tensor::Tensor;
use anyhow::{Context, Result, anyhow};
use std::time::Instant;

/// The trainer's policy on the CPU.
pub type CpuPolicy = Policy<CpuPasses>;

impl CpuPolicy {
    /// The policy `model`, its frozen `reference` (a copy of it), the value head and fresh
    /// optimisers, ending answers at `eos`.
    pub fn new(
        cfg: PpoConfig,
        model: Model,
        reference: Model,
        critic: Critic,
        eos: u32,
    ) -> Result<Self> {
        let (actor_opt, critic_opt) = starting_optimisers(&cfg, &model, &reference, &critic)?;
        let passes = CpuPasses {
            model,
            reference,
            critic,
            actor_opt,
            critic_opt,
            eos,
            train_eos: cfg.train_eos,
            ref_cache: RefCache::default(),
            rollout: None,
            grads: None,
            critic_grads: None,
        };
        Ok(Policy::over(passes, cfg, eos))
    }
}

/// The child being trained, its frozen reference copy, the value head and the two optimisers.
pub struct CpuPasses {
    pub model: Model,
    /// Frozen: the keys and values of its prompts are kept across updates, so replacing it needs
    /// `clear_reference_cache`.
    pub reference: Model,
    pub critic: Critic,
    pub actor_opt: AdamW,
    pub critic_opt: AdamW,
    eos: u32,
    train_eos: bool,
    ref_cache: RefCache,
    /// The last rollout's kept pass, until an update takes it.
    rollout: Option<KeptRollout>,
    /// The last step's gradient buffer, reused by the next.
    grads: Option<Grads>,
    /// The value head's gradient (w, b) between `backward` and `step`.
    critic_grads: Option<(Tensor, Tensor)>,
}

/// A step's forward pass: logits (M, V), final hidden states of each row's last index (B, C),
/// the values (B) and the activations, then the gradients of the logits and values.
pub struct CpuPass {
    logits: Vec<f32>,
    hidden: Vec<f32>,
    values: Vec<f32>,
    acts: Acts,
    dlogits: Vec<f32>,
    dvalues: Vec<f32>,
}

impl CpuPasses {
    /// The reference model's prompt cache (for its size and hit counts).
    pub fn reference_cache(&self) -> &RefCache {
        &self.ref_cache
    }

    /// Forgets the reference model's cached prompts; needed after `reference` is replaced.
    pub fn clear_reference_cache(&mut self) {
        self.ref_cache.clear();
    }

    fn values_of(&self, hidden: &[f32]) -> Vec<f32> {
        hidden
            .chunks_exact(self.model.hidden_size())
            .map(|h| self.critic.value(h))
            .collect()
    }
}

impl Passes for CpuPasses {
    type Pass = CpuPass;
    type Rollout = KeptRollout;

    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
        keep: bool,
    ) -> Result<Vec<Generation>> {
        self.rollout = None;
        if !keep {
            return model::generate(&self.model, prompts, params, self.eos, rng);
        }
        let rollout = model::generate_kept(&self.model, prompts, params, self.eos, rng)?;
        let gens = rollout.generations().to_vec();
        self.rollout = Some(rollout);
        Ok(gens)
    }

    fn take_rollout(&mut self) -> Option<KeptRollout> {
        self.rollout.take()
    }

    fn reference_logprobs(
        &mut self,
        episodes: &[&Episode],
        _sb: &ScoredBatch,
        eos: u32,
        train_eos: bool,
    ) -> Result<Vec<Vec<f32>>> {
        self.ref_cache
            .logprobs(&self.reference, episodes, eos, train_eos)
    }

    fn values(&mut self, sb: &ScoredBatch) -> Result<Vec<f32>> {
        let (_, hidden, _) = train_forward(&self.model, &sb.batch, &[])?;
        Ok(self.values_of(&hidden))
    }

    fn forward(
        &mut self,
        sb: &ScoredBatch,
        rollout: Option<(KeptRollout, &[Episode])>,
    ) -> Result<(CpuPass, Vec<f32>)> {
        let (logits, hidden, acts) = match rollout {
            Some((r, episodes)) if r.matches(episodes) => {
                let kept: Vec<usize> = episodes
                    .iter()
                    .map(|e| kept_tokens(&e.response, self.eos, self.train_eos))
                    .collect();
                r.finish(&self.model, &kept)?
            }
            _ => train_forward(&self.model, &sb.batch, &sb.positions)?,
        };
        let values = self.values_of(&hidden);
        let pass = CpuPass {
            logits,
            hidden,
            values: values.clone(),
            acts,
            dlogits: Vec::new(),
            dvalues: Vec::new(),
        };
        Ok((pass, values))
    }

    fn losses(
        &mut self,
        pass: &mut CpuPass,
        sb: &ScoredBatch,
        t: &StepTargets,
        cfg: &PpoConfig,
        kl_coef: f32,
    ) -> Result<(ActorLoss, f32, f32)> {
        let mut actor = actor_loss(
            &ActorInputs {
                logits: &pass.logits,
                vocab: self.model.vocab_size(),
                tokens: &sb.tokens,
                old_logprobs: &sb.old_logprobs,
                ref_logprobs: &t.ref_logprobs,
                advantages: &t.advantages,
            },
            cfg,
            kl_coef,
        );
        let (value_loss, critic_loss, dvalues) =
            critic_loss(&pass.values, &t.old_values, &t.returns, cfg.value_clip);
        pass.dlogits = std::mem::take(&mut actor.dlogits);
        pass.dvalues = dvalues;
        Ok((actor, value_loss, critic_loss))
    }

    fn backward(&mut self, mut pass: CpuPass, cfg: &PpoConfig) -> Result<(f32, f32)> {
        let c = self.model.hidden_size();
        let mut cw = Tensor::zeros(&[c]);
        let mut cb = Tensor::zeros(&[1]);
        for (r, h) in pass.hidden.chunks_exact(c).enumerate() {
            cb.data[0] += pass.dvalues[r];
            for (g, x) in cw.data.iter_mut().zip(h) {
                *g += pass.dvalues[r] * x;
            }
        }
        let grads = model::backward(
            &self.model,
            &mut pass.acts,
            &pass.dlogits,
            self.grads.take(),
        );
        drop(pass);
        let actor_norm = grad_norm(&grads.list())
            .context("actor gradient: nothing was applied to the weights")?;
        let critic_norm = clip_grad_norm(&mut [&mut cw, &mut cb], cfg.critic_max_grad_norm)
            .context("critic gradient: nothing was applied to the weights")?;
        self.grads = Some(grads);
        self.critic_grads = Some((cw, cb));
        Ok((actor_norm, critic_norm))
    }

    fn step(&mut self, cfg: &PpoConfig, actor_norm: f32) -> Result<()> {
        let grads = self
            .grads
            .as_ref()
            .ok_or_else(|| anyhow!("an optimiser step before backward"))?;
        let (cw, cb) = self
            .critic_grads
            .take()
            .ok_or_else(|| anyhow!("an optimiser step before backward"))?;
        // The actor's clipping scale goes into its step: one pass less over its gradients.
        self.actor_opt.step_scaled(
            &mut params_mut(&mut self.model),
            &grads.list(),
            clip_coef(actor_norm, cfg.actor_max_grad_norm),
        )?;
        self.critic_opt
            .step(&mut [&mut self.critic.w, &mut self.critic.b], &[&cw, &cb])
    }

    fn state(&self) -> Result<PolicyState> {
        Ok(PolicyState {
            model: self.model.clone(),
            critic: self.critic.clone(),
            actor_opt: self.actor_opt.clone(),
            critic_opt: self.critic_opt.clone(),
        })
    }

    fn restore(&mut self, state: PolicyState) -> Result<()> {
        check_state_fits(
            &state,
            &self.model,
            self.critic.hidden(),
            self.actor_opt.m.len(),
            self.critic_opt.m.len(),
        )?;
        self.rollout = None;
        self.grads = None;
        self.critic_grads = None;
        self.model = state.model;
        self.critic = state.critic;
        self.actor_opt = state.actor_opt;
        self.critic_opt = state.critic_opt;
        Ok(())
    }

    fn device(&self) -> String {
        "cpu".into()
    }
}

impl Clock for CpuPasses {
    type Mark = Instant;

    fn mark(&self) -> Result<Instant> {
        Ok(Instant::now())
    }

    fn seconds(&self, from: &Instant, to: &Instant) -> Result<f32> {
        Ok(to.duration_since(*from).as_secs_f32())
    }
}
