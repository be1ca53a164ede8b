//! The device backend's jobs for the trainer, mirroring `cpu::policy::CpuPolicy` one to one:
//! rollouts with the device decoder (the host's generator draws the uniforms, so the tokens are
//! the CPU's), and PAPER.md's update with the actor forward and backward, the frozen reference's
//! log-probs, the fused losses, the value head and both AdamW optimisers on the device. Only
//! tokens, log-probs, per-row values and the losses' means cross to the host.

pub mod refcache;

use crate::cpu::policy::{
    ScoredBatch, check_state_fits, params, scored_batch, starting_optimisers,
};
use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::train_batch::TrainBatch;
use crate::cuda::model::{DevActs, DevGrads, DevModel};
use crate::cuda::ops::optim::{self, AdamW};
use crate::cuda::ops::ppo_loss::{self as kl, ActorInputs, DevActorLoss};
use crate::cuda::policy::refcache::DevRefCache;
use crate::model::spec::Model;
use crate::ppo::config::PpoConfig;
use crate::ppo::loss::{ActorLoss, Critic, Episode, UpdateLosses};
use crate::ppo::steps::{
    StepTargets, all_or_nothing, batch_mean, check_finite, mean_of_steps, step_count,
};
use crate::ppo::trainer::{PolicyBackend, PolicyState};
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams};
use anyhow::{Context, Result, anyhow};

type Buf = DevBuf<f32>;

/// The policy, its frozen reference, the value head and both optimisers on a device.
pub struct CudaPolicy {
    gpu: Gpu,
    cfg: PpoConfig,
    eos: u32,
    /// The policy as it was given: its config and family, for `state` to rebuild a host model
    /// around the downloaded weights (its own weights are not kept up to date).
    host: Model,
    policy: DevModel,
    reference: DevModel,
    /// The value head: w (C), b (1).
    critic_w: Buf,
    critic_b: Buf,
    actor_opt: AdamW,
    critic_opt: AdamW,
    /// The last step's gradient buffer, reused by the next.
    grads: Option<DevGrads>,
    /// The frozen reference's prompt rows, kept across updates.
    ref_cache: DevRefCache,
}

/// What an error of a pass over a batch says about it: an allocation that fails names its bytes,
/// this names the update's episodes and the tokens of the pass.
fn pass_context(what: &str, episodes: usize, sb: &ScoredBatch) -> String {
    format!(
        "{what} of an update of {episodes} episodes ({} x {} tokens) on the device",
        sb.batch.b, sb.batch.t
    )
}

impl CudaPolicy {
    pub fn new(
        gpu: Gpu,
        cfg: PpoConfig,
        model: Model,
        reference: Model,
        critic: Critic,
        eos: u32,
    ) -> Result<Self> {
        let (actor_opt, critic_opt) = starting_optimisers(&cfg, &model, &reference, &critic)?;
        let g = &gpu;
        let upload = || -> Result<_> {
            Ok((
                DevModel::upload(g, &model)?,
                DevModel::upload(g, &reference)?,
                g.upload(&critic.w.data)?,
                g.upload(&critic.b.data)?,
                AdamW::upload(g, &actor_opt)?,
                AdamW::upload(g, &critic_opt)?,
            ))
        };
        let (policy, reference, critic_w, critic_b, actor_opt, critic_opt) = upload()
            .with_context(|| {
                format!(
                    "uploading the policy, its reference and optimiser ({} parameters each) to {}",
                    model.num_params(),
                    gpu.name
                )
            })?;
        Ok(CudaPolicy {
            cfg,
            eos,
            host: model,
            policy,
            reference,
            critic_w,
            critic_b,
            actor_opt,
            critic_opt,
            grads: None,
            ref_cache: DevRefCache::default(),
            gpu,
        })
    }

    fn hidden(&self) -> usize {
        self.host.hidden_size()
    }

    /// The actor's training forward on a scored batch.
    fn pass(&self, sb: &ScoredBatch) -> Result<(TrainBatch, DevActs)> {
        let g = &self.gpu;
        let batch = self.policy.train_batch(g, &sb.batch, &sb.positions)?;
        let acts = self.policy.forward(g, &batch)?;
        Ok((batch, acts))
    }

    /// values (B) of the value head on each row's last hidden state, on the device.
    fn values_on(&self, batch: &TrainBatch, acts: &DevActs) -> Result<Buf> {
        let g = &self.gpu;
        let mut values = g.alloc(batch.b)?;
        kl::value_forward(
            g,
            &mut values,
            acts.final_hidden(),
            &batch.last,
            &self.critic_w,
            &self.critic_b,
            batch.b,
            self.hidden(),
        )?;
        Ok(values)
    }

    /// Values of the last index of every row, before the update (no logits computed).
    fn values(&self, sb: &ScoredBatch, episodes: usize) -> Result<Vec<f32>> {
        let no_logits = ScoredBatch {
            batch: sb.batch.clone(),
            positions: Vec::new(),
            tokens: Vec::new(),
            old_logprobs: Vec::new(),
            rows: Vec::new(),
        };
        let (batch, acts) = self
            .pass(&no_logits)
            .with_context(|| pass_context("the values pass", episodes, sb))?;
        self.gpu.download(&self.values_on(&batch, &acts)?)
    }

    /// The reference model's prompt cache (for its size and hit counts).
    pub fn reference_cache(&self) -> &DevRefCache {
        &self.ref_cache
    }

    /// An empty reference cache bounded by `bytes` of device memory (0 keeps nothing).
    pub fn set_reference_cache_limit(&mut self, bytes: usize) {
        self.ref_cache = DevRefCache::new(bytes);
    }

    /// One optimiser step on the episodes `idx`, with the reference log-probs and (when given)
    /// the values before the update of the whole batch. Everything is checked before anything
    /// is applied.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        episodes: &[Episode],
        idx: &[usize],
        ref_lp: &[Vec<f32>],
        old_values: Option<&[f32]>,
        batch_mean: Option<f32>,
        kl_coef: f32,
    ) -> Result<UpdateLosses> {
        let cfg = self.cfg.clone();
        let eps: Vec<&Episode> = idx.iter().map(|&i| &episodes[i]).collect();
        let sb = scored_batch(&eps, self.eos, cfg.train_eos)?;
        let (batch, mut acts) = self
            .pass(&sb)
            .with_context(|| pass_context("the actor's pass", episodes.len(), &sb))?;
        let g = &self.gpu;
        let (b, c, m, v) = (
            batch.b,
            self.hidden(),
            sb.tokens.len(),
            self.policy.vocab_size(),
        );
        let values_dev = self.values_on(&batch, &acts)?;
        let values = g.download(&values_dev)?;
        let t = StepTargets::new(
            &cfg, episodes, idx, &sb.rows, &values, old_values, batch_mean, ref_lp,
        );
        let mut al_dev = DevActorLoss::new(g, m, v)
            .with_context(|| pass_context("the actor's loss", episodes.len(), &sb))?;
        // With no scored token the actor's terms are zero, as on the CPU, and backward skips
        // the head.
        let al = if m > 0 {
            let (tokens, old_lp) = (g.upload(&sb.tokens)?, g.upload(&sb.old_logprobs)?);
            let (reference, advantages) = (g.upload(&t.ref_logprobs)?, g.upload(&t.advantages)?);
            let inp = ActorInputs {
                logits: acts.logits(),
                vocab: v,
                tokens: &tokens,
                old_logprobs: &old_lp,
                ref_logprobs: &reference,
                advantages: &advantages,
            };
            kl::actor_loss(g, &mut al_dev, &inp, &cfg, kl_coef)?;
            al_dev.download(g)?
        } else {
            ActorLoss::default()
        };
        let (mut closs, mut dv) = (g.alloc(2)?, g.alloc(b)?);
        kl::critic_loss(
            g,
            &mut closs,
            &mut dv,
            &values_dev,
            &g.upload(&t.old_values)?,
            &g.upload(&t.returns)?,
            b,
            cfg.value_clip,
        )?;
        let closs = g.download(&closs)?;
        let (value_loss, critic_loss) = (closs[0], closs[1]);
        check_finite(&al, value_loss, critic_loss)?;
        let (mut cw, mut cb) = (g.zeros(c)?, g.zeros(1)?);
        kl::value_backward(
            g,
            &mut cw,
            &mut cb,
            &dv,
            acts.final_hidden(),
            &batch.last,
            b,
            c,
        )?;
        let mut grads = match self.grads.take() {
            Some(mut gr) => {
                gr.zero(g)?;
                gr
            }
            None => self.policy.zero_grads(g).with_context(|| {
                format!(
                    "the gradients ({} parameters) of an update of {} episodes on the device",
                    self.host.num_params(),
                    episodes.len()
                )
            })?,
        };
        self.policy
            .backward(g, &batch, &mut acts, &al_dev.dlogits, &mut grads)?;
        drop(acts);
        let views = grads.list();
        let mut norm_coef = g.alloc(2)?;
        let mut partial = g.alloc(optim::norm_pieces(&views).max(1))?;
        optim::grad_norm(
            g,
            &mut norm_coef,
            &mut partial,
            &views,
            cfg.actor_max_grad_norm,
        )?;
        let actor_norm = g.download(&norm_coef)?[0];
        if !actor_norm.is_finite() {
            return Err(anyhow!("the gradient norm is {actor_norm}"))
                .context("actor gradient: nothing was applied to the weights");
        }
        let (critic_norm, _) =
            optim::clip_grad_norm(g, &mut [&mut cw, &mut cb], cfg.critic_max_grad_norm)
                .context("critic gradient: nothing was applied to the weights")?;
        // The actor's clipping coefficient goes into its step, read from the device.
        self.actor_opt
            .step(g, &mut self.policy.params_mut(), &views, Some(&norm_coef))?;
        self.critic_opt.step(
            g,
            &mut [&mut self.critic_w, &mut self.critic_b],
            &[&cw, &cb],
            None,
        )?;
        self.grads = Some(grads);
        Ok(t.losses(
            &al,
            (value_loss, critic_loss),
            kl_coef,
            (actor_norm, critic_norm),
            sb.tokens.len(),
        ))
    }

    fn update_inner(
        &mut self,
        episodes: &[Episode],
        kl_coef: f32,
        rng: &mut Rng,
    ) -> Result<UpdateLosses> {
        let all: Vec<&Episode> = episodes.iter().collect();
        let sb = scored_batch(&all, self.eos, self.cfg.train_eos)?;
        // The frozen reference runs only the response tokens, on its cached prompt keys and values.
        let ref_lp = self
            .ref_cache
            .logprobs(
                &self.gpu,
                &self.reference,
                &all,
                self.eos,
                self.cfg.train_eos,
            )
            .with_context(|| pass_context("the reference's pass", episodes.len(), &sb))?;
        let steps = step_count(&self.cfg, episodes.len());
        // With one step the values of that step's forward are the values before the update.
        let old_values = if steps > 1 {
            Some(self.values(&sb, episodes.len())?)
        } else {
            None
        };
        let batch_mean = batch_mean(&self.cfg, episodes);
        let cfg = self.cfg.clone();
        mean_of_steps(&cfg, episodes.len(), kl_coef, rng, |idx| {
            self.step(
                episodes,
                idx,
                &ref_lp,
                old_values.as_deref(),
                batch_mean,
                kl_coef,
            )
        })
    }
}

impl PolicyBackend for CudaPolicy {
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
    ) -> Result<Vec<Generation>> {
        self.policy
            .generate(&self.gpu, prompts, params, self.eos, rng)
    }

    /// PAPER.md's update on `episodes`. On an error (a non-finite loss or gradient among them,
    /// or device memory running out) the weights, value head and optimisers are as they were
    /// before the call.
    fn update(
        &mut self,
        episodes: &[Episode],
        kl_coef: f32,
        rng: &mut Rng,
    ) -> Result<UpdateLosses> {
        let cfg = self.cfg.clone();
        all_or_nothing(self, &cfg, episodes.len(), rng, |p, rng| {
            p.update_inner(episodes, kl_coef, rng)
        })
    }

    fn state(&self) -> Result<PolicyState> {
        let g = &self.gpu;
        let model = self.policy.download(g, &self.host)?;
        let like = |opt: &AdamW, ps: &[&crate::tensor::Tensor]| {
            crate::ppo::AdamW::new(ps, opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay)
        };
        let actor_opt = self
            .actor_opt
            .download(g, &like(&self.actor_opt, &params(&model)))?;
        let c = self.hidden();
        let critic = Critic {
            w: crate::tensor::Tensor::from_vec(&[c], g.download(&self.critic_w)?),
            b: crate::tensor::Tensor::from_vec(&[1], g.download(&self.critic_b)?),
        };
        let critic_opt = self
            .critic_opt
            .download(g, &like(&self.critic_opt, &[&critic.w, &critic.b]))?;
        Ok(PolicyState {
            model,
            critic,
            actor_opt,
            critic_opt,
        })
    }

    fn restore(&mut self, state: PolicyState) -> Result<()> {
        check_state_fits(
            &state,
            &self.host,
            self.hidden(),
            self.actor_opt.m.len(),
            self.critic_opt.m.len(),
        )?;
        let g = &self.gpu;
        // Everything is uploaded before anything is replaced: a failed upload leaves this
        // policy as it was.
        let policy = DevModel::upload(g, &state.model)?;
        let (critic_w, critic_b) = (
            g.upload(&state.critic.w.data)?,
            g.upload(&state.critic.b.data)?,
        );
        let actor_opt = AdamW::upload(g, &state.actor_opt)?;
        let critic_opt = AdamW::upload(g, &state.critic_opt)?;
        self.grads = None;
        self.policy = policy;
        self.critic_w = critic_w;
        self.critic_b = critic_b;
        self.actor_opt = actor_opt;
        self.critic_opt = critic_opt;
        self.host = state.model;
        Ok(())
    }

    fn device(&self) -> String {
        self.gpu.name.clone()
    }
}
