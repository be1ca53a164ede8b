//! The CPU backend's jobs for the trainer: batched rollouts, and PAPER.md's policy update for
//! either child family (actor forward and backward, the frozen reference's log-probs, the value
//! head, the losses of `ppo::loss`, two AdamW optimisers with gradient clipping).

use crate::batch::Batch;
use crate::cpu::gpt2::{self, Gpt2Activations};
use crate::cpu::llama::{self, LlamaActivations};
use crate::cpu::refcache::RefCache;
use crate::cpu::rollout::{Rollout, generate_recorded};
use crate::model::gpt2::{Gpt2, Gpt2Weights};
use crate::model::llama::{Llama, LlamaWeights};
use crate::model::spec::Model;
use crate::ppo::adamw::{AdamW, clip_coef, clip_grad_norm, grad_norm};
use crate::ppo::config::PpoConfig;
use crate::ppo::loss::{
    ActorInputs, Critic, Episode, UpdateLosses, actor_loss, critic_loss, kept_tokens,
};
use crate::ppo::steps::{
    StepTargets, all_or_nothing, batch_mean, check_finite, mean_of_steps, step_count,
};
use crate::ppo::trainer::{PolicyBackend, PolicyState};
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams};
use crate::tensor::Tensor;
use anyhow::{Context, Result, bail};

/// Every parameter tensor of a model, in `named()` order.
pub fn params(model: &Model) -> Vec<&Tensor> {
    match model {
        Model::Gpt2(m) => m.weights.named().into_iter().map(|x| x.1).collect(),
        Model::Llama(m) => m.weights.named().into_iter().map(|x| x.1).collect(),
    }
}

fn params_mut(model: &mut Model) -> Vec<&mut Tensor> {
    match model {
        Model::Gpt2(m) => m.weights.named_mut().into_iter().map(|x| x.1).collect(),
        Model::Llama(m) => m.weights.named_mut().into_iter().map(|x| x.1).collect(),
    }
}

enum Grads {
    Gpt2(Gpt2Weights),
    Llama(LlamaWeights),
}

impl Grads {
    fn list(&self) -> Vec<&Tensor> {
        match self {
            Grads::Gpt2(g) => g.named().into_iter().map(|x| x.1).collect(),
            Grads::Llama(g) => g.named().into_iter().map(|x| x.1).collect(),
        }
    }

    fn list_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            Grads::Gpt2(g) => g.named_mut().into_iter().map(|x| x.1).collect(),
            Grads::Llama(g) => g.named_mut().into_iter().map(|x| x.1).collect(),
        }
    }
}

enum Acts {
    Gpt2(Box<Gpt2Activations>),
    Llama(Box<LlamaActivations>),
}

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

/// Log-probabilities of `tokens` under `model` at `positions` of `batch` (no activations kept).
pub fn token_logprobs(
    model: &Model,
    batch: &Batch,
    positions: &[(usize, usize)],
    tokens: &[u32],
) -> Result<Vec<f32>> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let logits = crate::cpu::model::logits(model, batch, positions)?;
    let v = model.vocab_size();
    Ok(tokens
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let row = &logits.data[i * v..(i + 1) * v];
            let max = row.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&z| (z as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            (row[a as usize] as f64 - lse) as f32
        })
        .collect())
}

/// Actor forward: logits (M, V) at `positions` and the final hidden state of each row's last
/// index (B, C), with the activations backward needs.
fn actor_forward(
    model: &Model,
    batch: &Batch,
    positions: &[(usize, usize)],
) -> Result<(Vec<f32>, Vec<f32>, Acts)> {
    let c = model.hidden_size();
    let mut last = Vec::with_capacity(batch.b * c);
    let (logits, acts) = match model {
        Model::Gpt2(m) => {
            let (logits, acts) = gpt2::forward(m, batch, positions)?;
            for r in 0..batch.b {
                last.extend_from_slice(acts.final_hidden(r, batch.t - 1));
            }
            (logits.data, Acts::Gpt2(Box::new(acts)))
        }
        Model::Llama(m) => {
            let (logits, acts) = llama::forward(m, batch, positions)?;
            for r in 0..batch.b {
                last.extend_from_slice(acts.final_hidden(r, batch.t - 1));
            }
            (logits.data, Acts::Llama(Box::new(acts)))
        }
    };
    Ok((logits, last, acts))
}

/// A rollout's kept forward pass and the prompts it ran.
struct Kept {
    prompts: Vec<Vec<u32>>,
    recorded: Recorded,
}

enum Recorded {
    Gpt2(Box<Rollout<Gpt2>>),
    Llama(Box<Rollout<Llama>>),
}

impl Kept {
    fn generations(&self) -> &[Generation] {
        match &self.recorded {
            Recorded::Gpt2(r) => &r.generations,
            Recorded::Llama(r) => &r.generations,
        }
    }

    /// Whether `episodes` are exactly this rollout's prompts and continuations.
    fn matches(&self, episodes: &[Episode]) -> bool {
        let gens = self.generations();
        episodes.len() == self.prompts.len()
            && episodes
                .iter()
                .zip(&self.prompts)
                .zip(gens)
                .all(|((e, p), g)| e.prompt == *p && e.response == g.tokens)
    }

    /// `actor_forward` of the scored batch of the rollout's episodes, from the kept pass.
    fn finish(self, model: &Model, kept: &[usize]) -> Result<(Vec<f32>, Vec<f32>, Acts)> {
        Ok(match (model, self.recorded) {
            (Model::Gpt2(m), Recorded::Gpt2(r)) => {
                let (logits, hidden, acts) = r.finish(m, kept)?;
                (logits, hidden, Acts::Gpt2(Box::new(acts)))
            }
            (Model::Llama(m), Recorded::Llama(r)) => {
                let (logits, hidden, acts) = r.finish(m, kept)?;
                (logits, hidden, Acts::Llama(Box::new(acts)))
            }
            _ => bail!("the kept rollout is of another model family"),
        })
    }
}

/// Gradients of every parameter, written into `reuse` (zeroed first) when given: the buffer is
/// as large as the model, and a fresh one costs a page fault per 4 KiB on every update.
fn actor_backward(model: &Model, acts: &mut Acts, dlogits: &[f32], reuse: Option<Grads>) -> Grads {
    let mut grads = match reuse {
        Some(mut g) => {
            for t in g.list_mut() {
                t.data.fill(0.0);
            }
            g
        }
        None => match model {
            Model::Gpt2(m) => Grads::Gpt2(Gpt2Weights::zeros(&m.config)),
            Model::Llama(m) => Grads::Llama(LlamaWeights::zeros(&m.config)),
        },
    };
    match (model, acts, &mut grads) {
        (Model::Gpt2(m), Acts::Gpt2(a), Grads::Gpt2(g)) => gpt2::backward_into(m, a, dlogits, g),
        (Model::Llama(m), Acts::Llama(a), Grads::Llama(g)) => {
            llama::backward_into(m, a, dlogits, g)
        }
        _ => unreachable!("activations and gradients come from the same model"),
    }
    grads
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

/// The CPU policy: the child being trained, its frozen reference copy, the value head and the
/// two optimisers.
pub struct CpuPolicy {
    pub model: Model,
    /// Frozen: the keys and values of its prompts are kept across updates, so replacing it needs
    /// `clear_reference_cache`.
    pub reference: Model,
    pub critic: Critic,
    pub actor_opt: AdamW,
    pub critic_opt: AdamW,
    pub cfg: PpoConfig,
    pub eos: u32,
    /// With one optimiser step per update, `generate` keeps its forward pass and the update that
    /// follows it (on exactly those episodes, with the same weights) differentiates that pass
    /// instead of running the policy again. On by default; the result is the same either way.
    pub reuse_rollout: bool,
    ref_cache: RefCache,
    rollout: Option<Kept>,
    /// The last step's gradient buffer, reused by the next.
    grads: Option<Grads>,
}

impl CpuPolicy {
    pub fn new(
        cfg: PpoConfig,
        model: Model,
        reference: Model,
        critic: Critic,
        eos: u32,
    ) -> Result<Self> {
        let (actor_opt, critic_opt) = starting_optimisers(&cfg, &model, &reference, &critic)?;
        Ok(CpuPolicy {
            model,
            reference,
            critic,
            actor_opt,
            critic_opt,
            cfg,
            eos,
            reuse_rollout: true,
            ref_cache: RefCache::default(),
            rollout: None,
            grads: None,
        })
    }

    /// The reference model's prompt cache (for its size and hit counts).
    pub fn reference_cache(&self) -> &RefCache {
        &self.ref_cache
    }

    /// Forgets the reference model's cached prompts; needed after `reference` is replaced.
    pub fn clear_reference_cache(&mut self) {
        self.ref_cache.clear();
    }

    /// Values of the last index of every row, without gradients (no logits computed).
    fn values(&self, batch: &Batch) -> Result<Vec<f32>> {
        let (_, hidden, _) = actor_forward(&self.model, batch, &[])?;
        let c = self.model.hidden_size();
        Ok(hidden
            .chunks_exact(c)
            .map(|h| self.critic.value(h))
            .collect())
    }

    /// One optimiser step on the episodes `idx`, with the reference log-probs and (when given)
    /// the values before the update of the whole batch.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        episodes: &[Episode],
        idx: &[usize],
        ref_lp: &[Vec<f32>],
        old_values: Option<&[f32]>,
        batch_mean: Option<f32>,
        kl_coef: f32,
        kept_pass: Option<(Vec<f32>, Vec<f32>, Acts)>,
    ) -> Result<UpdateLosses> {
        let cfg = &self.cfg;
        let eps: Vec<&Episode> = idx.iter().map(|&i| &episodes[i]).collect();
        let sb = scored_batch(&eps, self.eos, cfg.train_eos)?;
        let (logits, hidden, mut acts) = match kept_pass {
            Some(pass) => pass,
            None => actor_forward(&self.model, &sb.batch, &sb.positions)?,
        };
        let c = self.model.hidden_size();
        let values: Vec<f32> = hidden
            .chunks_exact(c)
            .map(|h| self.critic.value(h))
            .collect();
        let t = StepTargets::new(
            cfg, episodes, idx, &sb.rows, &values, old_values, batch_mean, ref_lp,
        );
        let al = actor_loss(
            &ActorInputs {
                logits: &logits,
                vocab: self.model.vocab_size(),
                tokens: &sb.tokens,
                old_logprobs: &sb.old_logprobs,
                ref_logprobs: &t.ref_logprobs,
                advantages: &t.advantages,
            },
            cfg,
            kl_coef,
        );
        let (value_loss, closs, dv) =
            critic_loss(&values, &t.old_values, &t.returns, cfg.value_clip);
        check_finite(&al, value_loss, closs)?;
        let mut cw = Tensor::zeros(&[c]);
        let mut cb = Tensor::zeros(&[1]);
        for (r, h) in hidden.chunks_exact(c).enumerate() {
            cb.data[0] += dv[r];
            for (g, x) in cw.data.iter_mut().zip(h) {
                *g += dv[r] * x;
            }
        }
        let grads = actor_backward(&self.model, &mut acts, &al.dlogits, self.grads.take());
        drop(acts);
        let gref = grads.list();
        let actor_norm =
            grad_norm(&gref).context("actor gradient: nothing was applied to the weights")?;
        let critic_norm = clip_grad_norm(&mut [&mut cw, &mut cb], cfg.critic_max_grad_norm)
            .context("critic gradient: nothing was applied to the weights")?;
        // The actor's clipping scale goes into its step: one pass less over its gradients.
        self.actor_opt.step_scaled(
            &mut params_mut(&mut self.model),
            &gref,
            clip_coef(actor_norm, cfg.actor_max_grad_norm),
        )?;
        self.critic_opt
            .step(&mut [&mut self.critic.w, &mut self.critic.b], &[&cw, &cb])?;
        self.grads = Some(grads);
        Ok(t.losses(
            &al,
            (value_loss, closs),
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
        rollout: Option<Kept>,
    ) -> Result<UpdateLosses> {
        let all: Vec<&Episode> = episodes.iter().collect();
        let sb = scored_batch(&all, self.eos, self.cfg.train_eos)?;
        // The frozen reference runs only the response tokens, on its cached prompt keys and values.
        let ref_lp =
            self.ref_cache
                .logprobs(&self.reference, &all, self.eos, self.cfg.train_eos)?;
        let steps = step_count(&self.cfg, episodes.len());
        // With one step the values of that step's forward are the values before the update.
        let old_values = if steps > 1 {
            Some(self.values(&sb.batch)?)
        } else {
            None
        };
        let batch_mean = batch_mean(&self.cfg, episodes);
        let mut kept_pass = match rollout {
            Some(r) if steps == 1 && r.matches(episodes) => {
                let kept: Vec<usize> = episodes
                    .iter()
                    .map(|e| kept_tokens(&e.response, self.eos, self.cfg.train_eos))
                    .collect();
                Some(r.finish(&self.model, &kept)?)
            }
            _ => None,
        };
        let cfg = self.cfg.clone();
        mean_of_steps(&cfg, episodes.len(), kl_coef, rng, |idx| {
            self.step(
                episodes,
                idx,
                &ref_lp,
                old_values.as_deref(),
                batch_mean,
                kl_coef,
                kept_pass.take(),
            )
        })
    }
}

impl PolicyBackend for CpuPolicy {
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
    ) -> Result<Vec<Generation>> {
        self.rollout = None;
        let steps = step_count(&self.cfg, prompts.len());
        if !(self.reuse_rollout && steps == 1 && params.max_new_tokens > 0) {
            return crate::cpu::model::generate(&self.model, prompts, params, self.eos, rng);
        }
        let recorded = match &self.model {
            Model::Gpt2(m) => Recorded::Gpt2(Box::new(generate_recorded(
                m, prompts, params, self.eos, rng,
            )?)),
            Model::Llama(m) => Recorded::Llama(Box::new(generate_recorded(
                m, prompts, params, self.eos, rng,
            )?)),
        };
        let rollout = Kept {
            prompts: prompts.to_vec(),
            recorded,
        };
        let gens = rollout.generations().to_vec();
        self.rollout = Some(rollout);
        Ok(gens)
    }

    /// PAPER.md's update on `episodes`. On an error (a non-finite loss or gradient among them)
    /// the weights, value head and optimisers are as they were before the call.
    fn update(
        &mut self,
        episodes: &[Episode],
        kl_coef: f32,
        rng: &mut Rng,
    ) -> Result<UpdateLosses> {
        // A kept pass belongs to the weights it ran with: it serves this update or none.
        let rollout = self.rollout.take();
        let cfg = self.cfg.clone();
        all_or_nothing(self, &cfg, episodes.len(), rng, |p, rng| {
            p.update_inner(episodes, kl_coef, rng, rollout)
        })
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
