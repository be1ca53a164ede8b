//! One update of a run, unaware of the backend: sample training prompts, generate the answers
//! all together, ask the parent, shape the rewards, update the policy, adjust the KL coefficient.

use crate::model::llama_tokenizer::{ChatMessage, apply_chatml};
use crate::model::spec::{ChildFiles, Model};
use crate::model::tokenizer::Tokenizer;
use crate::ppo::adamw::AdamW;
use crate::ppo::config::PpoConfig;
use crate::ppo::kl::KlController;
use crate::ppo::loss::{Critic, Episode, UpdateLosses};
use crate::reward::Embedder;
use crate::reward::Parent;
use crate::reward::shaping::{Shaping, rewards};
use crate::rng::Rng;
use crate::sample::{Generator, SamplingParams};
use crate::tasks::Task;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// The token to put before every prompt: a Llama tokenizer's BOS; GPT-2's `bos` is its
/// end-of-text, which the paper's reference does not put before prompts.
pub fn prompt_bos(model: &Model, bos: Option<u32>) -> Option<u32> {
    match model {
        Model::Llama(_) => bos,
        Model::Gpt2(_) => None,
    }
}

/// What a backend does for the trainer: sample a continuation of every prompt, all together
/// (KV cache), with each sampled token's log-probability (`Generator`), and the policy's update.
/// The run's assembly builds one for the device the run is on and hands it down.
pub trait PolicyBackend: Generator {
    /// The policy update on a batch of episodes. An error leaves the weights as they were.
    fn update(&mut self, episodes: &[Episode], kl_coef: f32, rng: &mut Rng)
    -> Result<UpdateLosses>;
    /// Copies of the policy, value head and optimisers, on the host (a device backend copies
    /// them down, which can fail).
    fn state(&self) -> Result<PolicyState>;
    fn restore(&mut self, state: PolicyState) -> Result<()>;
    /// What runs the policy: `cpu`, or the device's name.
    fn device(&self) -> String;
    /// Where the last update's time went: the rollout before it, the frozen reference's pass, the
    /// actor's passes and the optimisers' steps (the reward is the trainer's). Zero where not
    /// measured.
    fn phase_seconds(&self) -> PhaseSeconds {
        PhaseSeconds::default()
    }
}

/// Seconds of the phases of one update: the rollout (sampling the answers), the reward (the
/// parent's answers, the embeddings and the shaping), the frozen reference's log-probs, the
/// actor's forward and backward (with the value head, the losses and the values before the update
/// when there are several steps), and the optimisers' steps. The backend times its own phases
/// (`phases::Clock`): wall clock on the CPU, timing events on a GPU's stream, which span the
/// device's work from the phase's first launch to its last kernel's end. The reward is wall
/// clock, up to where the rewards are on the host. What they leave of an update's `seconds` is
/// the trainer's bookkeeping (tokenizing, decoding answers) and the host's work between phases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    pub rollout: f32,
    pub reward: f32,
    pub reference: f32,
    pub actor: f32,
    pub optimiser: f32,
}

/// The trained parts of a backend.
#[derive(Clone, Debug)]
pub struct PolicyState {
    pub model: Model,
    pub critic: Critic,
    pub actor_opt: AdamW,
    pub critic_opt: AdamW,
}

/// Everything a checkpoint needs to continue a run exactly. The frozen reference model is not
/// in it: it is the run's initial model, loaded again from the run's `--model` on resume.
#[derive(Clone, Debug)]
pub struct TrainerState {
    pub policy: PolicyState,
    pub kl_coef: f32,
    /// The trainer's generator (prompt draws, sampling, minibatch order).
    pub rng: [u64; 4],
    /// Episodes and updates done so far.
    pub episodes: u64,
    pub updates: u64,
}

/// One episode as the episode log writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub prompt: String,
    pub parent: String,
    pub child: String,
    pub reward: f32,
}

/// What one update reports: its losses, the rewards, throughput, and the episodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// Updates done, this one included.
    pub update: u64,
    /// Episodes done, this batch included.
    pub episode: u64,
    pub reward_mean: f32,
    pub reward_std: f32,
    pub reward_min: f32,
    pub reward_max: f32,
    #[serde(flatten)]
    pub losses: UpdateLosses,
    /// The KL coefficient after the controller saw this update (the next update's).
    pub next_kl_coef: f32,
    /// Episodes of this batch over the wall time of the whole update.
    pub episodes_per_s: f32,
    pub seconds: f32,
    /// Where `seconds` went.
    #[serde(default)]
    pub phase_seconds: PhaseSeconds,
    pub episodes: Vec<EpisodeRecord>,
}

pub struct Trainer {
    pub cfg: PpoConfig,
    backend: Box<dyn PolicyBackend>,
    tokenizer: Tokenizer,
    eos: u32,
    bos: Option<u32>,
    chat_template: Option<String>,
    task: Task,
    embedder: Option<Box<dyn Embedder>>,
    parent: Box<dyn Parent>,
    shaping: Shaping,
    kl: KlController,
    rng: Rng,
    episodes: u64,
    updates: u64,
    batch_size: usize,
    max_new_tokens: usize,
    prompt_ids: HashMap<String, Vec<u32>>,
}

impl Trainer {
    /// A trainer of the policy `backend` holds, whose tokenizer and special tokens are
    /// `child`'s; `bos` goes before every prompt (`prompt_bos`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: PpoConfig,
        backend: Box<dyn PolicyBackend>,
        child: &ChildFiles,
        bos: Option<u32>,
        task: Task,
        embedder: Option<Box<dyn Embedder>>,
        parent: Box<dyn Parent>,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        let shaping = Shaping::from_name(&cfg.shaping)?;
        if shaping.needs_embeddings() && embedder.is_none() {
            bail!("shaping {} needs an embedder", cfg.shaping);
        }
        let batch_size = cfg.batch_size.unwrap_or(task.settings.batch_size);
        let max_new_tokens = cfg.max_new_tokens.unwrap_or(task.settings.max_new_tokens);
        let chat_template = child.chat_template.clone();
        if cfg.chat && chat_template.is_none() {
            bail!("chat prompts were asked for but the child has no chat template");
        }
        Ok(Trainer {
            kl: KlController::new(cfg.kl_coef, cfg.kl_target, cfg.adaptive_kl),
            cfg,
            backend,
            tokenizer: child.tokenizer.clone(),
            eos: child.eos,
            bos,
            chat_template,
            task,
            embedder,
            parent,
            shaping,
            rng: Rng::new(seed),
            episodes: 0,
            updates: 0,
            batch_size,
            max_new_tokens,
            prompt_ids: HashMap::new(),
        })
    }

    /// What runs the policy: `cpu`, or the device's name.
    pub fn device(&self) -> String {
        self.backend.device()
    }

    /// The child's tokenizer (saved beside the policy in a checkpoint).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The token that ends an answer and pads batches.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    pub fn kl_coef(&self) -> f32 {
        self.kl.coef
    }

    pub fn episodes(&self) -> u64 {
        self.episodes
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }

    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The token ids the child sees for a task prompt (its chat turn with `chat`), cached.
    pub fn encode_prompt(&mut self, prompt: &str) -> Result<Vec<u32>> {
        if let Some(ids) = self.prompt_ids.get(prompt) {
            return Ok(ids.clone());
        }
        let text = match (&self.chat_template, self.cfg.chat) {
            (Some(tpl), true) => apply_chatml(tpl, &[ChatMessage::new("user", prompt)], true)?,
            _ => prompt.to_string(),
        };
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(
            self.tokenizer
                .encode(&text)
                .with_context(|| format!("cannot tokenize the prompt {prompt:?}"))?,
        );
        if ids.is_empty() {
            bail!("the prompt {prompt:?} has no tokens");
        }
        self.prompt_ids.insert(prompt.to_string(), ids.clone());
        Ok(ids)
    }

    /// The text of an answer: its tokens before end-of-text.
    pub fn decode_answer(&self, tokens: &[u32]) -> Result<String> {
        let end = tokens
            .iter()
            .position(|&t| t == self.eos)
            .unwrap_or(tokens.len());
        self.tokenizer.decode(&tokens[..end])
    }

    /// One batch: B training prompts, their answers, rewards, the policy update and the KL
    /// controller. An error (a non-finite loss or gradient) leaves the trainer as it was.
    pub fn update(&mut self) -> Result<UpdateStats> {
        let t0 = Instant::now();
        let rng_before = self.rng.clone();
        let result = self.update_inner(t0);
        if result.is_err() {
            self.rng = rng_before;
        }
        result
    }

    fn update_inner(&mut self, t0: Instant) -> Result<UpdateStats> {
        let examples: Vec<String> = self
            .task
            .sample_batch(&mut self.rng, self.batch_size)
            .into_iter()
            .map(|e| e.prompt.to_string())
            .collect();
        let prompts = examples
            .iter()
            .map(|p| self.encode_prompt(p))
            .collect::<Result<Vec<_>>>()?;
        let params = SamplingParams {
            temperature: self.cfg.temperature,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: self.max_new_tokens,
        };
        let gens = self.backend.generate(&prompts, &params, &mut self.rng)?;
        let children = gens
            .iter()
            .map(|g| self.decode_answer(&g.tokens))
            .collect::<Result<Vec<_>>>()?;
        let prompt_refs: Vec<&str> = examples.iter().map(String::as_str).collect();
        let t_reward = Instant::now();
        let parents = self.parent.answers(&prompt_refs)?;
        let p_refs: Vec<&str> = parents.iter().map(String::as_str).collect();
        let c_refs: Vec<&str> = children.iter().map(String::as_str).collect();
        let r = rewards(
            self.embedder.as_deref(),
            self.shaping,
            self.cfg.power,
            &p_refs,
            &c_refs,
        )?;
        let reward = t_reward.elapsed().as_secs_f32();
        let episodes: Vec<Episode> = prompts
            .into_iter()
            .zip(gens)
            .zip(&r)
            .map(|((prompt, g), &reward)| Episode {
                prompt,
                response: g.tokens,
                logprobs: g.logprobs,
                reward,
            })
            .collect();
        let losses = self
            .backend
            .update(&episodes, self.kl.coef, &mut self.rng)?;
        let next_kl_coef = self.kl.update(losses.kl);
        self.episodes += episodes.len() as u64;
        self.updates += 1;
        let n = r.len() as f64;
        let mean = r.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = r.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let seconds = t0.elapsed().as_secs_f32();
        Ok(UpdateStats {
            update: self.updates,
            episode: self.episodes,
            reward_mean: mean as f32,
            reward_std: var.sqrt() as f32,
            reward_min: r.iter().copied().fold(f32::INFINITY, f32::min),
            reward_max: r.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            losses,
            next_kl_coef,
            episodes_per_s: episodes.len() as f32 / seconds.max(1e-9),
            seconds,
            phase_seconds: PhaseSeconds {
                reward,
                ..self.backend.phase_seconds()
            },
            episodes: examples
                .into_iter()
                .zip(parents)
                .zip(children)
                .zip(r)
                .map(|(((prompt, parent), child), reward)| EpisodeRecord {
                    prompt,
                    parent,
                    child,
                    reward,
                })
                .collect(),
        })
    }

    /// A copy of everything that continues this run exactly.
    pub fn state(&self) -> Result<TrainerState> {
        Ok(TrainerState {
            policy: self.backend.state()?,
            kl_coef: self.kl.coef,
            rng: self.rng.s,
            episodes: self.episodes,
            updates: self.updates,
        })
    }

    /// Continues from a saved state.
    pub fn restore(&mut self, state: TrainerState) -> Result<()> {
        if !(state.kl_coef.is_finite() && state.kl_coef >= 0.0) {
            bail!("the saved KL coefficient {} is not valid", state.kl_coef);
        }
        self.backend.restore(state.policy)?;
        self.kl.coef = state.kl_coef;
        self.rng = Rng { s: state.rng };
        self.episodes = state.episodes;
        self.updates = state.updates;
        Ok(())
    }
}
