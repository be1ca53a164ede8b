//! Every hyper-parameter of the policy update, with docs/METHOD.md's defaults.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Episodes per update; `None` takes the task's batch size.
    pub batch_size: Option<usize>,
    /// New tokens per answer; `None` takes the task's.
    pub max_new_tokens: Option<usize>,
    /// Reward shaping by name (`pgsrm`, `truncate`, `euclidean`, `binary`).
    pub shaping: String,
    /// Sharpening exponent of `pgsrm` and `truncate`.
    pub power: f32,
    /// Sampling temperature of the rollouts (the paper samples at 1).
    pub temperature: f32,
    /// Write each prompt as a user turn of the child's chat template (Llama-family children).
    pub chat: bool,
    pub actor_lr: f32,
    pub critic_lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub actor_max_grad_norm: f32,
    pub critic_max_grad_norm: f32,
    pub entropy_coef: f32,
    /// KL coefficient at the start of a run.
    pub kl_coef: f32,
    pub kl_target: f32,
    /// The 1.5x controller; off keeps `kl_coef` fixed.
    pub adaptive_kl: bool,
    /// Clipped surrogate with this range; `None` is the reference's plain policy gradient.
    pub clip_range: Option<f32>,
    pub ppo_epochs: usize,
    pub minibatches: usize,
    /// What the reward is measured against: the value head (`r - V`, the reference) or the mean
    /// reward of the update's batch.
    pub baseline: Baseline,
    /// Normalise the advantages of a minibatch to mean 0, standard deviation 1 over its tokens.
    pub whiten_advantages: bool,
    /// Clip the value change against the values before the update by this much.
    pub value_clip: Option<f32>,
    /// Count end-of-text tokens in the response mask. The reference does not: end-of-text
    /// doubles as its pad token, so every end-of-text is masked.
    pub train_eos: bool,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            batch_size: None,
            max_new_tokens: None,
            shaping: "pgsrm".into(),
            power: crate::reward::shaping::DEFAULT_POWER,
            temperature: 1.0,
            chat: false,
            actor_lr: 1e-5,
            critic_lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            actor_max_grad_norm: 1.0,
            critic_max_grad_norm: 1.0,
            entropy_coef: 0.01,
            kl_coef: 5e-5,
            kl_target: 0.8,
            adaptive_kl: true,
            clip_range: None,
            ppo_epochs: 1,
            minibatches: 1,
            baseline: Baseline::Critic,
            whiten_advantages: false,
            value_clip: None,
            train_eos: false,
        }
    }
}

/// The baseline subtracted from each episode's reward to give its advantage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// `A = r - V`, V from the value head before the update (docs/METHOD.md).
    Critic,
    /// `A = r - mean(r)` over the update's batch. The value head still trains and is logged; it
    /// does not enter the advantage. A freshly initialised value head is noise of the order of
    /// the reward itself, which drowns a short run's signal; the batch mean is not.
    BatchMean,
}

impl PpoConfig {
    /// Rejects settings the update cannot run with, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        let positive = [
            ("actor_lr", self.actor_lr),
            ("critic_lr", self.critic_lr),
            ("eps", self.eps),
            ("actor_max_grad_norm", self.actor_max_grad_norm),
            ("critic_max_grad_norm", self.critic_max_grad_norm),
            ("kl_target", self.kl_target),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number, got {v}");
            }
        }
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1), got {v}");
            }
        }
        for (name, v) in [
            ("weight_decay", self.weight_decay),
            ("entropy_coef", self.entropy_coef),
            ("kl_coef", self.kl_coef),
            ("temperature", self.temperature),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{name} must be a non-negative number, got {v}");
            }
        }
        if let Some(c) = self.clip_range
            && !(c.is_finite() && c > 0.0)
        {
            bail!("clip_range must be a positive number, got {c}");
        }
        if let Some(c) = self.value_clip
            && !(c.is_finite() && c > 0.0)
        {
            bail!("value_clip must be a positive number, got {c}");
        }
        if self.ppo_epochs == 0 || self.minibatches == 0 {
            bail!("ppo_epochs and minibatches must be at least 1");
        }
        if self.batch_size == Some(0) {
            bail!("batch_size must be at least 1");
        }
        crate::reward::shaping::Shaping::from_name(&self.shaping)?;
        Ok(())
    }
}
