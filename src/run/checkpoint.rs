//! A trainer's checkpoint in a run folder: the child in the Hugging Face layout (so `transformers`
//! loads `step-N/` as it is), the value head and optimiser moments as safetensors, and the
//! scalars (KL coefficient, RNG words, counters, optimiser settings) as JSON.

pub use crate::model::spec::ChildFiles;
use crate::model::spec::load_model;
use crate::ppo::{AdamW, Critic, PolicyState, TrainerState};
use crate::run::folder::{load_state, save_state};
use crate::tensor::Tensor;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

fn opt_json(o: &AdamW) -> Value {
    json!({"lr": o.lr, "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps,
        "weight_decay": o.weight_decay, "step": o.step, "tensors": o.m.len()})
}

/// What a checkpoint saves of the trainer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Everything a run continues from exactly.
    All,
    /// The child, value head and counters, not the optimiser moments: a third of the size, for a
    /// run's last checkpoint that is only evaluated. A run cannot continue from it.
    NoMoments,
}

/// Writes `state` into the (empty) checkpoint folder `dir`, the child's weights with `child`'s
/// tokenizer and settings.
pub fn save_trainer_state(
    dir: &Path,
    state: TrainerState,
    child: &ChildFiles,
    keep: Keep,
) -> Result<()> {
    let TrainerState {
        policy,
        kl_coef,
        rng,
        episodes,
        updates,
    } = state;
    let PolicyState {
        model,
        critic,
        actor_opt,
        critic_opt,
    } = policy;
    let with_weights = child.with_model(model);
    with_weights.save_pretrained(dir)?;
    let p = PolicyState {
        model: with_weights.model,
        critic,
        actor_opt,
        critic_opt,
    };
    let mut tensors: Vec<(String, &Tensor)> = vec![
        ("critic.w".into(), &p.critic.w),
        ("critic.b".into(), &p.critic.b),
    ];
    if keep == Keep::All {
        for (name, o) in [("actor_opt", &p.actor_opt), ("critic_opt", &p.critic_opt)] {
            for (i, (m, v)) in o.m.iter().zip(&o.v).enumerate() {
                tensors.push((format!("{name}.m.{i}"), m));
                tensors.push((format!("{name}.v.{i}"), v));
            }
        }
    }
    let rest = json!({
        "kl_coef": kl_coef,
        // RNG words as strings: JSON readers outside Rust lose u64 precision.
        "rng": rng.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        "episodes": episodes,
        "updates": updates,
        "actor_opt": opt_json(&p.actor_opt),
        "critic_opt": opt_json(&p.critic_opt),
        "optimizer_moments": keep == Keep::All,
    });
    save_state(dir, &tensors, &rest)
}

fn take(t: &mut BTreeMap<String, Tensor>, name: &str, dir: &Path) -> Result<Tensor> {
    t.remove(name)
        .with_context(|| format!("{}: the trainer state has no tensor {name}", dir.display()))
}

fn load_opt(
    rest: &Value,
    t: &mut BTreeMap<String, Tensor>,
    name: &str,
    dir: &Path,
) -> Result<AdamW> {
    let o = &rest[name];
    let f = |k: &str| -> Result<f32> {
        o[k].as_f64().map(|x| x as f32).with_context(|| {
            format!(
                "{}: trainer_state.json has no number {name}.{k}",
                dir.display()
            )
        })
    };
    let n = o["tensors"].as_u64().with_context(|| {
        format!(
            "{}: trainer_state.json has no {name}.tensors",
            dir.display()
        )
    })? as usize;
    let mut m = Vec::with_capacity(n);
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        m.push(take(t, &format!("{name}.m.{i}"), dir)?);
        v.push(take(t, &format!("{name}.v.{i}"), dir)?);
    }
    Ok(AdamW {
        lr: f("lr")?,
        beta1: f("beta1")?,
        beta2: f("beta2")?,
        eps: f("eps")?,
        weight_decay: f("weight_decay")?,
        step: o["step"]
            .as_u64()
            .with_context(|| format!("{}: trainer_state.json has no {name}.step", dir.display()))?,
        m,
        v,
    })
}

/// Reads a trainer state written by `save_trainer_state` with `Keep::All`.
pub fn load_trainer_state(dir: &Path) -> Result<TrainerState> {
    let model = load_model(&dir.display().to_string())
        .with_context(|| format!("cannot load the child of checkpoint {}", dir.display()))?
        .model;
    let (mut t, rest) = load_state(dir)?;
    if rest["optimizer_moments"] == false {
        bail!(
            "{}: this checkpoint holds the child and value head but not the optimiser moments (the \
             last checkpoint of a `pgsrm reproduce` run, kept a third of the size), so the run \
             cannot be continued from it; train a new run for more episodes",
            dir.display()
        );
    }
    let rng_words: Vec<u64> = rest["rng"]
        .as_array()
        .map(|a| a.iter().filter_map(|w| w.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let rng: [u64; 4] = rng_words.try_into().map_err(|_| {
        anyhow::anyhow!("{}: trainer_state.json: rng must be 4 words", dir.display())
    })?;
    let num = |k: &str| {
        rest[k]
            .as_u64()
            .with_context(|| format!("{}: trainer_state.json has no count {k}", dir.display()))
    };
    let policy = PolicyState {
        model,
        critic: Critic {
            w: take(&mut t, "critic.w", dir)?,
            b: take(&mut t, "critic.b", dir)?,
        },
        actor_opt: load_opt(&rest, &mut t, "actor_opt", dir)?,
        critic_opt: load_opt(&rest, &mut t, "critic_opt", dir)?,
    };
    if !t.is_empty() {
        let names: Vec<&String> = t.keys().collect();
        bail!(
            "{}: unexpected tensors in the trainer state: {names:?}",
            dir.display()
        );
    }
    Ok(TrainerState {
        policy,
        kl_coef: rest["kl_coef"]
            .as_f64()
            .with_context(|| format!("{}: trainer_state.json has no kl_coef", dir.display()))?
            as f32,
        rng,
        episodes: num("episodes")?,
        updates: num("updates")?,
    })
}
