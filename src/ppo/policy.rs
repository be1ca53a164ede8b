//! The policy update, once for every backend. A backend runs the passes (`Passes`: the rollout,
//! the frozen reference's log-probs, the actor's forward with the value head's values, the
//! losses, backward and the optimisers' steps) on its own memory; `Policy` runs an update's
//! steps over them in one order (`update`): the reference first, the values before the update
//! when there are several steps, then per step forward, targets, losses, a check that nothing is
//! not finite, backward, and the optimisers. The trainer sees `Policy` as a `PolicyBackend`.

use crate::batch::Batch;
use crate::model::spec::Model;
use crate::ppo::adamw::AdamW;
use crate::ppo::config::PpoConfig;
use crate::ppo::loss::{ActorLoss, Critic, Episode, UpdateLosses, kept_tokens};
use crate::ppo::phases::{Clock, Phase, Spans};
use crate::ppo::steps::{
    StepTargets, all_or_nothing, batch_mean, check_finite, mean_of_steps, step_count,
};
use crate::ppo::trainer::{PhaseSeconds, PolicyBackend, PolicyState};
use crate::rng::Rng;
use crate::sample::{Generation, Generator, SamplingParams};
use crate::tensor::Tensor;
use anyhow::{Result, bail};

/// Default bound on the bytes a backend's cache of the frozen reference's prompt rows keeps: the
/// prompts of a hundred-prompt task take far less (the rows of a shared prefix are kept once).
pub const REFERENCE_CACHE_BYTES: usize = 384 << 20;

/// A left-padded prompt + kept-response batch and its scored tokens.
pub struct ScoredBatch {
    pub batch: Batch,
    /// (M) the (row, index) pairs whose logits predict the scored tokens.
    pub positions: Vec<(usize, usize)>,
    /// (M) the scored tokens, their rollout log-probs, and each one's row.
    pub tokens: Vec<u32>,
    pub old_logprobs: Vec<f32>,
    pub rows: Vec<usize>,
}

/// Prompt followed by the kept response tokens, left padded with `eos`. Response tokens after
/// the mask are left out: nothing reads them. Every row ends at index T - 1 with its last real
/// token, where the value head reads the hidden state.
pub fn scored_batch(episodes: &[&Episode], eos: u32, train_eos: bool) -> Result<ScoredBatch> {
    let mut seqs = Vec::with_capacity(episodes.len());
    for (r, e) in episodes.iter().enumerate() {
        if e.prompt.is_empty() {
            bail!("episode {r} has an empty prompt");
        }
        if e.logprobs.len() != e.response.len() {
            bail!(
                "episode {r} has {} response tokens and {} log-probs",
                e.response.len(),
                e.logprobs.len()
            );
        }
        let k = kept_tokens(&e.response, eos, train_eos);
        let mut s = e.prompt.clone();
        s.extend_from_slice(&e.response[..k]);
        seqs.push(s);
    }
    let batch = Batch::left_padded(&seqs, eos)?;
    let mut out = ScoredBatch {
        positions: Vec::new(),
        tokens: Vec::new(),
        old_logprobs: Vec::new(),
        rows: Vec::new(),
        batch,
    };
    for (r, e) in episodes.iter().enumerate() {
        let k = kept_tokens(&e.response, eos, train_eos);
        let first = out.batch.start[r] + e.prompt.len();
        for j in 0..k {
            out.positions.push((r, first + j - 1));
            out.tokens.push(e.response[j]);
            out.old_logprobs.push(e.logprobs[j]);
            out.rows.push(r);
        }
    }
    Ok(out)
}

/// Every parameter tensor of a model, in `named()` order.
pub fn params(model: &Model) -> Vec<&Tensor> {
    match model {
        Model::Gpt2(m) => m.weights.named().into_iter().map(|x| x.1).collect(),
        Model::Llama(m) => m.weights.named().into_iter().map(|x| x.1).collect(),
    }
}

/// The checks every backend makes of a policy's parts (the reference a copy of the policy, the
/// value head as wide as its hidden state), and the two optimisers it starts from.
pub fn starting_optimisers(
    cfg: &PpoConfig,
    model: &Model,
    reference: &Model,
    critic: &Critic,
) -> Result<(AdamW, AdamW)> {
    cfg.validate()?;
    if model.family() != reference.family() || model.num_params() != reference.num_params() {
        bail!(
            "the reference model ({}, {} parameters) is not a copy of the policy ({}, {} parameters)",
            reference.family(),
            reference.num_params(),
            model.family(),
            model.num_params()
        );
    }
    if critic.hidden() != model.hidden_size() {
        bail!(
            "the value head reads {} features but the model's hidden state has {}",
            critic.hidden(),
            model.hidden_size()
        );
    }
    let actor_opt = AdamW::new(
        &params(model),
        cfg.actor_lr,
        cfg.beta1,
        cfg.beta2,
        cfg.eps,
        cfg.weight_decay,
    );
    let critic_opt = AdamW::new(
        &[&critic.w, &critic.b],
        cfg.critic_lr,
        cfg.beta1,
        cfg.beta2,
        cfg.eps,
        cfg.weight_decay,
    );
    Ok((actor_opt, critic_opt))
}

/// Refuses a saved state that does not fit a policy like `model` whose value head reads `hidden`
/// features and whose optimisers hold `actor_tensors` and `critic_tensors` tensors.
pub fn check_state_fits(
    state: &PolicyState,
    model: &Model,
    hidden: usize,
    actor_tensors: usize,
    critic_tensors: usize,
) -> Result<()> {
    if state.model.family() != model.family() || state.model.num_params() != model.num_params() {
        bail!(
            "the saved policy ({}, {} parameters) does not match this one ({}, {} parameters)",
            state.model.family(),
            state.model.num_params(),
            model.family(),
            model.num_params()
        );
    }
    if state.critic.hidden() != hidden
        || state.actor_opt.m.len() != actor_tensors
        || state.critic_opt.m.len() != critic_tensors
    {
        bail!("the saved value head or optimiser state does not match this policy");
    }
    Ok(())
}

/// What a backend runs for `Policy`: the policy, its frozen reference, the value head and the two
/// optimisers live in the backend's memory, and only tokens, log-probs, per-row values and the
/// losses' means cross to the host. The backend times its own work (`Clock`).
pub trait Passes: Clock {
    /// What a forward pass keeps for its losses and backward.
    type Pass;
    /// What a rollout kept of its own forward pass, for an update that differentiates it
    /// instead of running the policy again (same weights, same tokens).
    type Rollout;

    /// Samples a continuation of every prompt, all together, ending at `eos` (`Generator`); with
    /// `keep`, also keeps the rollout's pass for `take_rollout`.
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
        keep: bool,
    ) -> Result<Vec<Generation>>;
    /// What the last `generate` kept, once: it belongs to the weights it ran with.
    fn take_rollout(&mut self) -> Option<Self::Rollout>;
    /// The frozen reference's log-probabilities of every episode's scored tokens (`sb` is their
    /// scored batch).
    fn reference_logprobs(
        &mut self,
        episodes: &[&Episode],
        sb: &ScoredBatch,
        eos: u32,
        train_eos: bool,
    ) -> Result<Vec<Vec<f32>>>;
    /// The value head's values (B) on each row's last index, with no logits.
    fn values(&mut self, sb: &ScoredBatch) -> Result<Vec<f32>>;
    /// The actor's forward on `sb` and the values (B) of its rows: `rollout`'s pass when given
    /// (with the episodes of the whole update, which it must match), else a fresh one.
    fn forward(
        &mut self,
        sb: &ScoredBatch,
        rollout: Option<(Self::Rollout, &[Episode])>,
    ) -> Result<(Self::Pass, Vec<f32>)>;
    /// The actor's loss on the pass's logits and the critic's on its values under `targets`:
    /// (actor, value loss, critic loss). The gradients of the logits and values stay with the
    /// pass for `backward`.
    fn losses(
        &mut self,
        pass: &mut Self::Pass,
        sb: &ScoredBatch,
        targets: &StepTargets,
        cfg: &PpoConfig,
        kl_coef: f32,
    ) -> Result<(ActorLoss, f32, f32)>;
    /// The critic's gradient and the actor's through the pass, and their norms (actor, critic)
    /// before clipping; the critic's gradient clipped. An error applies nothing.
    fn backward(&mut self, pass: Self::Pass, cfg: &PpoConfig) -> Result<(f32, f32)>;
    /// Both optimisers' steps on `backward`'s gradients, the actor's scaled to its clipped norm
    /// (`actor_norm` before clipping).
    fn step(&mut self, cfg: &PpoConfig, actor_norm: f32) -> Result<()>;
    /// Copies of the policy, value head and optimisers, on the host.
    fn state(&self) -> Result<PolicyState>;
    fn restore(&mut self, state: PolicyState) -> Result<()>;
    /// What runs the passes: `cpu`, or the device's name.
    fn device(&self) -> String;
}

/// The trainer's policy on a backend's passes.
pub struct Policy<P: Passes> {
    pub passes: P,
    pub cfg: PpoConfig,
    pub eos: u32,
    /// With one optimiser step per update, a rollout keeps its forward pass and the update that
    /// follows it (on exactly those episodes, with the same weights) differentiates that pass
    /// instead of running the policy again. On by default; the result is the same either way.
    pub reuse_rollout: bool,
    /// Where the last update's time went, its rollout's included (the backend's phases).
    phases: PhaseSeconds,
    /// The phases of the rollout and update under way, read when the update ends.
    spans: Spans<P::Mark>,
}

impl<P: Passes> Policy<P> {
    pub fn over(passes: P, cfg: PpoConfig, eos: u32) -> Self {
        Policy {
            passes,
            cfg,
            eos,
            reuse_rollout: true,
            phases: PhaseSeconds::default(),
            spans: Spans::default(),
        }
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
        rollout: Option<P::Rollout>,
    ) -> Result<UpdateLosses> {
        let cfg = self.cfg.clone();
        let eps: Vec<&Episode> = idx.iter().map(|&i| &episodes[i]).collect();
        let sb = scored_batch(&eps, self.eos, cfg.train_eos)?;
        let (passes, spans) = (&mut self.passes, &mut self.spans);
        let (mut pass, values) = spans.timed(passes, Phase::Actor, |p| {
            p.forward(&sb, rollout.map(|r| (r, episodes)))
        })?;
        let t = StepTargets::new(
            &cfg, episodes, idx, &sb.rows, &values, old_values, batch_mean, ref_lp,
        );
        let (actor, value_loss, critic_loss) = spans.timed(passes, Phase::Actor, |p| {
            p.losses(&mut pass, &sb, &t, &cfg, kl_coef)
        })?;
        check_finite(&actor, value_loss, critic_loss)?;
        let (actor_norm, critic_norm) =
            spans.timed(passes, Phase::Actor, |p| p.backward(pass, &cfg))?;
        spans.timed(passes, Phase::Optimiser, |p| p.step(&cfg, actor_norm))?;
        Ok(t.losses(
            &actor,
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
        rollout: Option<P::Rollout>,
    ) -> Result<UpdateLosses> {
        let all: Vec<&Episode> = episodes.iter().collect();
        let sb = scored_batch(&all, self.eos, self.cfg.train_eos)?;
        // The frozen reference runs only the response tokens, on its cached prompt keys and values.
        let (eos, train_eos) = (self.eos, self.cfg.train_eos);
        let (passes, spans) = (&mut self.passes, &mut self.spans);
        let ref_lp = spans.timed(passes, Phase::Reference, |p| {
            p.reference_logprobs(&all, &sb, eos, train_eos)
        })?;
        let steps = step_count(&self.cfg, episodes.len());
        // With one step the values of that step's forward are the values before the update.
        let old_values = if steps > 1 {
            Some(spans.timed(passes, Phase::Actor, |p| p.values(&sb))?)
        } else {
            None
        };
        let batch_mean = batch_mean(&self.cfg, episodes);
        // A kept pass serves an update of one step, which runs the whole batch in order.
        let mut rollout = rollout.filter(|_| steps == 1);
        let cfg = self.cfg.clone();
        mean_of_steps(&cfg, episodes.len(), kl_coef, rng, |idx| {
            self.step(
                episodes,
                idx,
                &ref_lp,
                old_values.as_deref(),
                batch_mean,
                kl_coef,
                rollout.take(),
            )
        })
    }
}

impl<P: Passes> Generator for Policy<P> {
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
    ) -> Result<Vec<Generation>> {
        let keep = self.reuse_rollout
            && step_count(&self.cfg, prompts.len()) == 1
            && params.max_new_tokens > 0;
        // A rollout starts the phases of the update that follows it.
        self.spans = Spans::default();
        self.spans.timed(&mut self.passes, Phase::Rollout, |p| {
            p.generate(prompts, params, rng, keep)
        })
    }
}

impl<P: Passes> PolicyBackend for Policy<P> {
    /// The paper's update on `episodes`. On an error (a non-finite loss or gradient among them,
    /// or device memory running out) the weights, value head and optimisers are as they were
    /// before the call.
    fn update(
        &mut self,
        episodes: &[Episode],
        kl_coef: f32,
        rng: &mut Rng,
    ) -> Result<UpdateLosses> {
        // A kept pass belongs to the weights it ran with: it serves this update or none.
        let rollout = self.passes.take_rollout();
        self.phases = PhaseSeconds::default();
        let cfg = self.cfg.clone();
        let losses = all_or_nothing(self, &cfg, episodes.len(), rng, |p, rng| {
            p.update_inner(episodes, kl_coef, rng, rollout)
        });
        // Read after the update, so the device is waited for once, at its end.
        let phases = self.spans.read(&self.passes);
        let losses = losses?;
        self.phases = phases?;
        Ok(losses)
    }

    fn state(&self) -> Result<PolicyState> {
        self.passes.state()
    }

    fn restore(&mut self, state: PolicyState) -> Result<()> {
        self.passes.restore(state)
    }

    fn device(&self) -> String {
        self.passes.device()
    }

    fn phase_seconds(&self) -> PhaseSeconds {
        self.phases
    }
}
