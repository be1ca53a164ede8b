//! The trainer end to end on `random:tiny` with the colors task and the binary reward (no
//! embedder needed): an update runs and moves the weights, and a run stopped and resumed gives
//! the same metrics as one that was not.

use pgsrm::model::spec::{Model, load_model};
use pgsrm::ppo::policy::params;
use pgsrm::ppo::{PpoConfig, Trainer, UpdateStats};
use pgsrm::run::train::trainer_on;
use pgsrm::tasks;

fn trainer(seed: u64) -> Trainer {
    let loaded = load_model("random:tiny:3").unwrap();
    let task = tasks::by_name("colors").unwrap();
    let cfg = PpoConfig {
        shaping: "binary".into(),
        batch_size: Some(6),
        ..PpoConfig::default()
    };
    trainer_on(&pgsrm::device::Device::Cpu, cfg, loaded, task, None, seed).unwrap()
}

/// The stats without the wall-clock figures.
fn timeless(mut s: UpdateStats) -> UpdateStats {
    s.episodes_per_s = 0.0;
    s.seconds = 0.0;
    s.phase_seconds = Default::default();
    s
}

fn weights(m: &Model) -> Vec<f32> {
    params(m)
        .iter()
        .flat_map(|t| t.data.iter().copied())
        .collect()
}

#[test]
fn one_update_on_colors_with_binary_reward() {
    let mut t = trainer(1);
    let before = weights(&t.state().unwrap().policy.model);
    let s = t.update().unwrap();
    assert_eq!(s.update, 1);
    assert_eq!(s.episode, 6);
    assert_eq!(s.episodes.len(), 6);
    assert_eq!(t.episodes(), 6);
    let train: Vec<&str> = t.task().train().iter().map(|e| e.prompt).collect();
    for e in &s.episodes {
        assert!(train.contains(&e.prompt.as_str()), "{}", e.prompt);
        assert_eq!(Some(e.parent.as_str()), t.task().answer(&e.prompt));
        assert!(e.reward == 0.0 || e.reward == 1.0);
    }
    for x in [
        s.reward_mean,
        s.losses.policy_loss,
        s.losses.value_loss,
        s.losses.entropy,
        s.losses.kl,
        s.losses.actor_loss,
        s.losses.critic_loss,
        s.losses.actor_grad_norm,
        s.losses.critic_grad_norm,
        s.episodes_per_s,
    ] {
        assert!(x.is_finite(), "{s:?}");
    }
    // A random init is nearly uniform over 50257 tokens: entropy near ln 50257 = 10.8.
    assert!(s.losses.entropy > 9.0, "{}", s.losses.entropy);
    assert!(s.losses.tokens > 0);
    // The KL to the frozen copy is zero on the first update (the same weights).
    assert!(s.losses.kl.abs() < 1e-5, "{}", s.losses.kl);
    // KL far under target / 1.5: the controller lowers the coefficient.
    assert!((s.next_kl_coef - 5e-5 / 1.5).abs() < 1e-10);
    let after = weights(&t.state().unwrap().policy.model);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(
        moved > before.len() / 2,
        "{moved} of {} moved",
        before.len()
    );
    // The stats serialise as one flat JSON object per update.
    let j = serde_json::to_value(&s).unwrap();
    assert!(j.get("policy_loss").is_some() && j.get("reward_mean").is_some());
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let mut straight = trainer(2);
    let a: Vec<UpdateStats> = (0..4)
        .map(|_| timeless(straight.update().unwrap()))
        .collect();

    let mut first = trainer(2);
    let mut b: Vec<UpdateStats> = (0..2).map(|_| timeless(first.update().unwrap())).collect();
    let state = first.state().unwrap();
    drop(first);
    // A fresh trainer with a different seed and critic: the restore replaces all of it.
    let mut resumed = trainer(99);
    resumed.restore(state).unwrap();
    assert_eq!(resumed.episodes(), 12);
    b.extend((0..2).map(|_| timeless(resumed.update().unwrap())));
    assert_eq!(a, b);
    assert_eq!(
        weights(&straight.state().unwrap().policy.model),
        weights(&resumed.state().unwrap().policy.model)
    );
    // The policy has moved away from the reference (the sampled estimate may have either sign).
    assert!(a[3].losses.kl != 0.0);
}
