//! The device backend's passes for the trainer's policy (`ppo::policy::Passes`), mirroring
//! `cpu::policy::CpuPasses` one to one: rollouts with the device decoder (the host's generator
//! draws the uniforms, so the tokens are the CPU's), the frozen reference's log-probs, the actor's
//! forward and backward, the fused losses, the value head and both AdamW optimisers on the device.
//! Only tokens, log-probs, per-row values and the losses' means cross to the host.

pub mod refcache;
mod step_buffers;

use crate::cuda::device::{DevBuf, Gpu, Mark};
use crate::cuda::model::generate::Lent;
use crate::cuda::model::generate::{DecodeCache, Draws};
use crate::cuda::model::train_batch::TrainBatch;
use crate::cuda::model::{DevActs, DevGrads, DevModel, DevRollout};
use crate::cuda::ops::optim::{self, AdamW};
use crate::cuda::ops::ppo_loss::{self as kl, ActorInputs, DevActorLoss};
use crate::cuda::policy::refcache::DevRefCache;
use crate::cuda::policy::step_buffers::StepBuffers;
use crate::model::spec::Model;
use crate::ppo::config::PpoConfig;
use crate::ppo::loss::{ActorLoss, Critic, Episode};
use crate::ppo::phases::Clock;
use crate::ppo::policy::{
    Passes, Policy, ScoredBatch, check_state_fits, params, starting_optimisers,
};
use crate::ppo::steps::StepTargets;
use crate::ppo::trainer::PolicyState;
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams};
use anyhow::{Context, Result, anyhow};
use std::sync::Arc;

type Buf = DevBuf<f32>;

/// The trainer's policy on a device.
pub type CudaPolicy = Policy<CudaPasses>;

impl CudaPolicy {
    /// The policy `model`, its frozen `reference` (a copy of it), the value head and fresh
    /// optimisers, uploaded to `gpu`, ending answers at `eos`.
    pub fn new(
        gpu: Arc<Gpu>,
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
        let passes = CudaPasses {
            eos,
            host: model,
            policy,
            reference,
            critic_w,
            critic_b,
            actor_opt,
            critic_opt,
            grads: None,
            after_backward: false,
            critic_grads: None,
            critic_zero_list: None,
            critic_norm: optim::NormBufs::default(),
            actor_norm: optim::NormBufs::default(),
            ref_cache: DevRefCache::default(),
            decoding: DecodeCache::default(),
            rollout: None,
            reused: 0,
            zero_list: None,
            loss_bufs: None,
            kept: StepBuffers::default(),
            gpu,
        };
        Ok(Policy::over(passes, cfg, eos))
    }
}

/// The policy, its frozen reference, the value head and both optimisers on a device.
pub struct CudaPasses {
    gpu: Arc<Gpu>,
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
    /// Whether `backward` left gradients for `step`: the actor's (`grads`, with its norm and
    /// clipping coefficient in `actor_norm`) and the value head's clipped one (`critic_grads`).
    after_backward: bool,
    /// The value head's gradient (w, b), kept between updates.
    critic_grads: Option<(Buf, Buf)>,
    /// The lists that zero the value head's gradient and read it for its norm.
    critic_zero_list: Option<optim::TensorList>,
    critic_norm: optim::NormBufs,
    /// The actor's gradient norm's buffers and list, kept while the gradients stay where they are.
    actor_norm: optim::NormBufs,
    /// The frozen reference's prompt rows, kept across updates.
    ref_cache: DevRefCache,
    /// The rollouts' buffers and graphs per batch shape, for the policy's weights (updated in
    /// place, so they stay valid until `restore` replaces them).
    decoding: DecodeCache,
    /// The last rollout's recorded pass, until an update takes it.
    rollout: Option<DevRollout>,
    /// Updates that differentiated their rollout's pass instead of running the policy again.
    pub reused: usize,
    /// The gradients' list for zeroing them in one launch.
    zero_list: Option<optim::TensorList>,
    /// The actor loss's buffers of the last step, for the next.
    loss_bufs: Option<DevActorLoss>,
    /// The step's small inputs and outputs, kept for the next.
    kept: StepBuffers,
}

/// A step's forward pass on the device and what its losses leave for backward.
pub struct CudaPass {
    batch: TrainBatch,
    acts: DevActs,
    values: Buf,
    actor: Option<DevActorLoss>,
    dvalues: Option<Buf>,
    /// What a recorded rollout lent with its activations, to give back after backward.
    lent: Option<Lent>,
}

/// Whether `episodes` are exactly the rollout's prompts and continuations, in order.
fn rollout_matches(lent: &Lent, episodes: &[Episode]) -> bool {
    episodes.len() == lent.prompts.len()
        && episodes
            .iter()
            .zip(&lent.prompts)
            .zip(&lent.generations)
            .all(|((e, p), g)| e.prompt == *p && e.response == g.tokens)
}

/// What an error of a pass over a batch says about it: an allocation that fails names its bytes,
/// this names the batch and its tokens.
fn pass_context(what: &str, sb: &ScoredBatch) -> String {
    format!(
        "{what} of a batch of {} episodes ({} x {} tokens) on the device",
        sb.batch.b, sb.batch.b, sb.batch.t
    )
}

impl CudaPasses {
    fn hidden(&self) -> usize {
        self.host.hidden_size()
    }

    /// The actor's training forward on a scored batch.
    fn pass(&mut self, sb: &ScoredBatch) -> Result<(TrainBatch, DevActs)> {
        let g = &self.gpu;
        let reuse = self.kept.batch.take();
        let batch = self
            .policy
            .train_batch(g, &sb.batch, &sb.positions, reuse)?;
        let acts = self.policy.forward(g, &batch, self.kept.acts.take())?;
        Ok((batch, acts))
    }

    /// values (B) of the value head on each row's last hidden state, on the device.
    fn values_on(&mut self, batch: &TrainBatch, acts: &DevActs) -> Result<Buf> {
        let g = &self.gpu;
        let mut values = step_buffers::exactly(g, self.kept.values.take(), batch.b)?;
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

    /// The batch of a recorded rollout whose episodes are `sb`'s, in the rollout's own layout
    /// (the prompts left padded to one width, then every step's fed token), with logits wanted
    /// at `sb`'s scored tokens in its order and each row ending at its last kept token; and the
    /// rollout's activations made ready for backward on it.
    fn finish_rollout(
        &mut self,
        sb: &ScoredBatch,
        mut r: DevRollout,
    ) -> Result<(TrainBatch, DevRollout)> {
        let g = &self.gpu;
        let l = &r.lent;
        let b = l.prompts.len();
        let mut kept = vec![0usize; b];
        for &row in &sb.rows {
            kept[row] += 1;
        }
        let (mut positions, mut logit_rows) = (Vec::new(), Vec::new());
        for (row, &k) in kept.iter().enumerate() {
            for j in 0..k {
                positions.push((row, l.tp - 1 + j));
                logit_rows.push((j * b + row) as i32);
            }
        }
        let last: Vec<usize> = kept.iter().map(|&k| l.tp - 1 + k).collect();
        let (vocab, context) = (self.policy.vocab_size(), self.policy.context());
        let reuse = self.kept.batch.take();
        let batch =
            TrainBatch::ending_at(g, &l.batch(), &positions, &last, (vocab, context), reuse)?;
        let logit_rows: Vec<i32> = logit_rows.into_iter().chain([0]).collect();
        let logit_rows = g.upload_reusing(self.kept.logit_rows.take(), &logit_rows)?;
        self.policy
            .finish_recorded(g, &batch, &mut r, &logit_rows)?;
        self.kept.logit_rows = Some(logit_rows);
        Ok((batch, r))
    }

    /// The rollouts' buffers and graphs (for how often a graph ran).
    pub fn decoding(&self) -> &DecodeCache {
        &self.decoding
    }

    /// Whether decoding, the rollouts' and the frozen reference's, replays a batch shape's
    /// recorded graph (on by default): off, every kernel is launched one by one, to compare.
    pub fn set_decode_graphs(&mut self, on: bool) {
        self.decoding = DecodeCache::new(on);
        self.rollout = None;
        self.ref_cache.set_graphs(on);
    }

    /// The reference model's prompt cache (for its size and hit counts).
    pub fn reference_cache(&self) -> &DevRefCache {
        &self.ref_cache
    }

    /// An empty reference cache bounded by `bytes` of device memory (0 keeps nothing).
    pub fn set_reference_cache_limit(&mut self, bytes: usize) {
        self.ref_cache = DevRefCache::new(bytes);
    }
}

impl Passes for CudaPasses {
    type Pass = CudaPass;
    type Rollout = DevRollout;

    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
        keep: bool,
    ) -> Result<Vec<Generation>> {
        if let Some(r) = self.rollout.take() {
            self.policy.give_back(&mut self.decoding, r);
        }
        let (g, d, eos) = (&self.gpu, &mut self.decoding, self.eos);
        if !keep {
            return self
                .policy
                .generate(g, d, prompts, params, eos, Draws::Host(rng));
        }
        let r = self
            .policy
            .generate_recorded(g, d, prompts, params, eos, Draws::Host(rng))?;
        let gens = r.lent.generations.clone();
        self.rollout = Some(r);
        Ok(gens)
    }

    fn take_rollout(&mut self) -> Option<DevRollout> {
        self.rollout.take()
    }

    fn reference_logprobs(
        &mut self,
        episodes: &[&Episode],
        sb: &ScoredBatch,
        eos: u32,
        train_eos: bool,
    ) -> Result<Vec<Vec<f32>>> {
        self.ref_cache
            .logprobs(&self.gpu, &self.reference, episodes, eos, train_eos)
            .with_context(|| pass_context("the reference's pass", sb))
    }

    fn values(&mut self, sb: &ScoredBatch) -> Result<Vec<f32>> {
        let no_logits = ScoredBatch {
            batch: sb.batch.clone(),
            positions: Vec::new(),
            tokens: Vec::new(),
            old_logprobs: Vec::new(),
            rows: Vec::new(),
        };
        let (batch, acts) = self
            .pass(&no_logits)
            .with_context(|| pass_context("the values pass", sb))?;
        let values = self.values_on(&batch, &acts)?;
        let host = self.gpu.download(&values)?;
        (self.kept.batch, self.kept.values) = (Some(batch), Some(values));
        self.kept.acts = Some(acts);
        Ok(host)
    }

    fn forward(
        &mut self,
        sb: &ScoredBatch,
        rollout: Option<(DevRollout, &[Episode])>,
    ) -> Result<(CudaPass, Vec<f32>)> {
        let (batch, acts, lent) = match rollout {
            Some((r, episodes)) if rollout_matches(&r.lent, episodes) => {
                let (batch, r) = self
                    .finish_rollout(sb, r)
                    .with_context(|| pass_context("the rollout's kept pass", sb))?;
                self.reused += 1;
                (batch, r.acts, Some(r.lent))
            }
            other => {
                if let Some((r, _)) = other {
                    self.policy.give_back(&mut self.decoding, r);
                }
                let (batch, acts) = self
                    .pass(sb)
                    .with_context(|| pass_context("the actor's pass", sb))?;
                (batch, acts, None)
            }
        };
        let values = self.values_on(&batch, &acts)?;
        let host_values = self.gpu.download(&values)?;
        let pass = CudaPass {
            batch,
            acts,
            values,
            actor: None,
            dvalues: None,
            lent,
        };
        Ok((pass, host_values))
    }

    fn losses(
        &mut self,
        pass: &mut CudaPass,
        sb: &ScoredBatch,
        t: &StepTargets,
        cfg: &PpoConfig,
        kl_coef: f32,
    ) -> Result<(ActorLoss, f32, f32)> {
        let g = &self.gpu;
        let (b, m, v) = (pass.batch.b, sb.tokens.len(), self.policy.vocab_size());
        let mut al_dev = DevActorLoss::reusing(g, self.loss_bufs.take(), m, v)
            .with_context(|| pass_context("the actor's loss", sb))?;
        // With no scored token the actor's terms are zero, as on the CPU, and backward skips
        // the head.
        let k = &mut self.kept;
        let actor = if m > 0 {
            let tokens = g.upload_reusing(k.tokens.take(), &sb.tokens)?;
            let old_lp = g.upload_reusing(k.old_logprobs.take(), &sb.old_logprobs)?;
            let reference = g.upload_reusing(k.ref_logprobs.take(), &t.ref_logprobs)?;
            let advantages = g.upload_reusing(k.advantages.take(), &t.advantages)?;
            let inp = ActorInputs {
                logits: pass.acts.logits(),
                vocab: v,
                tokens: &tokens,
                old_logprobs: &old_lp,
                ref_logprobs: &reference,
                advantages: &advantages,
            };
            kl::actor_loss(g, &mut al_dev, &inp, cfg, kl_coef)?;
            (k.tokens, k.old_logprobs) = (Some(tokens), Some(old_lp));
            (k.ref_logprobs, k.advantages) = (Some(reference), Some(advantages));
            al_dev.download(g)?
        } else {
            ActorLoss::default()
        };
        let mut closs = step_buffers::exactly(g, k.critic_loss.take(), 2)?;
        let mut dv = step_buffers::exactly(g, k.dvalues.take(), b)?;
        let old_values = g.upload_reusing(k.old_values.take(), &t.old_values)?;
        let returns = g.upload_reusing(k.returns.take(), &t.returns)?;
        kl::critic_loss(
            g,
            &mut closs,
            &mut dv,
            &pass.values,
            &old_values,
            &returns,
            b,
            cfg.value_clip,
        )?;
        let host_closs = g.download(&closs)?;
        (k.critic_loss, k.old_values, k.returns) = (Some(closs), Some(old_values), Some(returns));
        pass.actor = Some(al_dev);
        pass.dvalues = Some(dv);
        Ok((actor, host_closs[0], host_closs[1]))
    }

    fn backward(&mut self, pass: CudaPass, cfg: &PpoConfig) -> Result<(f32, f32)> {
        let CudaPass {
            batch,
            mut acts,
            values,
            actor,
            dvalues,
            lent,
        } = pass;
        let (actor, dv) = actor
            .zip(dvalues)
            .ok_or_else(|| anyhow!("backward before the losses"))?;
        let (g, b, c) = (&self.gpu, batch.b, self.hidden());
        let (mut cw, mut cb) = match self.critic_grads.take() {
            Some((mut w, mut b)) => {
                optim::grad_zero(g, &mut [&mut w, &mut b], &mut self.critic_zero_list)?;
                (w, b)
            }
            None => (g.zeros(c)?, g.zeros(1)?),
        };
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
                gr.zero(g, &mut self.zero_list)?;
                gr
            }
            None => self.policy.zero_grads(g).with_context(|| {
                format!(
                    "the gradients ({} parameters) of an update on the device",
                    self.host.num_params()
                )
            })?,
        };
        self.policy
            .backward(g, &batch, &mut acts, &actor.dlogits, &mut grads)?;
        self.loss_bufs = Some(actor);
        (self.kept.batch, self.kept.values) = (Some(batch), Some(values));
        self.kept.dvalues = Some(dv);
        // A rollout's buffers go back for the next rollout of its shape to write.
        // A fresh pass's stay for the next step of the shape.
        match lent {
            Some(lent) => {
                let r = DevRollout { acts, lent };
                self.policy.give_back(&mut self.decoding, r);
            }
            None => self.kept.acts = Some(acts),
        }
        let norm_coef = self
            .actor_norm
            .norm(g, &grads.list(), cfg.actor_max_grad_norm)?;
        let actor_norm = g.download(norm_coef)?[0];
        if !actor_norm.is_finite() {
            return Err(anyhow!("the gradient norm is {actor_norm}"))
                .context("actor gradient: nothing was applied to the weights");
        }
        let (critic_norm, _) = optim::clip_grad_norm(
            g,
            &mut [&mut cw, &mut cb],
            cfg.critic_max_grad_norm,
            &mut self.critic_norm,
        )
        .context("critic gradient: nothing was applied to the weights")?;
        self.grads = Some(grads);
        self.critic_grads = Some((cw, cb));
        self.after_backward = true;
        Ok((actor_norm, critic_norm))
    }

    fn step(&mut self, _cfg: &PpoConfig, _actor_norm: f32) -> Result<()> {
        let g = &self.gpu;
        let before = || anyhow!("an optimiser step before backward");
        if !std::mem::take(&mut self.after_backward) {
            return Err(before());
        }
        let grads = self.grads.as_ref().ok_or_else(before)?;
        let (cw, cb) = self.critic_grads.as_ref().ok_or_else(before)?;
        let norm_coef = self.actor_norm.norm_coef().ok_or_else(before)?;
        // The actor's clipping coefficient goes into its step, read from the device.
        self.actor_opt.step(
            g,
            &mut self.policy.params_mut(),
            &grads.list(),
            Some(norm_coef),
        )?;
        self.critic_opt.step(
            g,
            &mut [&mut self.critic_w, &mut self.critic_b],
            &[cw, cb],
            None,
        )
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
        self.after_backward = false;
        self.decoding.clear();
        self.rollout = None;
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

impl Clock for CudaPasses {
    type Mark = Mark;

    fn mark(&self) -> Result<Mark> {
        self.gpu.mark()
    }

    fn seconds(&self, from: &Mark, to: &Mark) -> Result<f32> {
        from.seconds_to(to)
    }
}
