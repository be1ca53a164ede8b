//! The CPU policy update on tiny GPT-2 and Llama children: the clipped surrogate gives the
//! reference's update with one epoch and one minibatch, the weights and value head move, a
//! non-finite loss is an error that leaves everything as it was.

use pgsrm::cpu::policy::CpuPolicy;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::llama::{Llama, LlamaConfig};
use pgsrm::model::spec::Model;
use pgsrm::ppo::loss::kept_tokens;
use pgsrm::ppo::policy::scored_batch;
use pgsrm::ppo::{Critic, Episode, PolicyBackend, PpoConfig};
use pgsrm::rng::Rng;
use pgsrm::sample::SamplingParams;

fn gpt2_tiny() -> Model {
    Model::Gpt2(Gpt2::random(Gpt2Config::named("tiny").unwrap(), 4))
}

fn llama_tiny() -> Model {
    let cfg = LlamaConfig::tiny();
    Model::Llama(Llama::random(cfg, 7))
}

/// Episodes sampled from the model itself, with prompts of different lengths and a reward per
/// episode; `eos` is made to appear by putting it in one response by hand.
fn episodes(model: &Model, eos: u32, rewards: &[f32]) -> Vec<Episode> {
    let v = model.vocab_size() as u32;
    let prompts: Vec<Vec<u32>> = (0..rewards.len())
        .map(|i| {
            (0..3 + i * 2)
                .map(|j| ((i * 7 + j * 3) as u32) % (v - 1))
                .collect()
        })
        .collect();
    let params = SamplingParams {
        max_new_tokens: 3,
        ..SamplingParams::default()
    };
    let gens =
        pgsrm::cpu::model::generate(model, &prompts, &params, eos, &mut Rng::new(9)).unwrap();
    let mut eps: Vec<Episode> = prompts
        .into_iter()
        .zip(gens)
        .zip(rewards)
        .map(|((prompt, g), &reward)| Episode {
            prompt,
            response: g.tokens,
            logprobs: g.logprobs,
            reward,
        })
        .collect();
    // One response that stopped after one token: its end-of-text is masked.
    let e = &mut eps[0];
    e.response.truncate(1);
    e.logprobs.truncate(1);
    e.response.push(eos);
    e.logprobs.push(-1.0);
    eps
}

fn policy(model: &Model, cfg: PpoConfig, eos: u32) -> CpuPolicy {
    let critic = Critic::new(model.hidden_size(), 1);
    CpuPolicy::new(cfg, model.clone(), model.clone(), critic, eos).unwrap()
}

fn max_diff(a: &Model, b: &Model) -> f32 {
    let pa = pgsrm::ppo::policy::params(a);
    let pb = pgsrm::ppo::policy::params(b);
    let mut worst = 0.0f32;
    for (x, y) in pa.iter().zip(&pb) {
        for (u, w) in x.data.iter().zip(&y.data) {
            worst = worst.max((u - w).abs());
        }
    }
    worst
}

#[test]
fn scored_batch_masks_end_of_text_and_padding() {
    let eos = 9;
    assert_eq!(kept_tokens(&[4, 9, 9], eos, false), 1);
    assert_eq!(kept_tokens(&[4, 9, 9], eos, true), 2);
    assert_eq!(kept_tokens(&[4, 5], eos, false), 2);
    let a = Episode {
        prompt: vec![1, 2, 3],
        response: vec![4, 9],
        logprobs: vec![-0.5, -0.1],
        reward: 1.0,
    };
    let b = Episode {
        prompt: vec![5],
        response: vec![6, 7],
        logprobs: vec![-0.2, -0.3],
        reward: 0.0,
    };
    let sb = scored_batch(&[&a, &b], eos, false).unwrap();
    // Rows: prompt + kept response = [1 2 3 4] and [5 6 7], left padded to T = 4.
    assert_eq!(sb.batch.t, 4);
    assert_eq!(sb.batch.tokens, vec![1, 2, 3, 4, 9, 5, 6, 7]);
    assert_eq!(sb.batch.start, vec![0, 1]);
    // Token 4 is predicted at row 0 index 2 (token 3); 6 at row 1 index 1, 7 at index 2.
    assert_eq!(sb.positions, vec![(0, 2), (1, 1), (1, 2)]);
    assert_eq!(sb.tokens, vec![4, 6, 7]);
    assert_eq!(sb.old_logprobs, vec![-0.5, -0.2, -0.3]);
    assert_eq!(sb.rows, vec![0, 1, 1]);
    let bad = Episode {
        logprobs: vec![],
        ..a.clone()
    };
    let e = scored_batch(&[&bad], eos, false).err().unwrap().to_string();
    assert!(e.contains("episode 0"), "{e}");
}

fn clipped_equals_reference(model: Model, eos: u32) {
    let eps = episodes(&model, eos, &[1.0, 0.0, 0.5, 0.25]);
    let mut plain = policy(&model, PpoConfig::default(), eos);
    let mut clipped = policy(
        &model,
        PpoConfig {
            clip_range: Some(0.2),
            ..PpoConfig::default()
        },
        eos,
    );
    let a = plain.update(&eps, 5e-5, &mut Rng::new(1)).unwrap();
    let b = clipped.update(&eps, 5e-5, &mut Rng::new(1)).unwrap();
    // The rollout's log-probs came from the decoder, the update's from a full forward: the same
    // numbers up to rounding, so the ratio is 1 and nothing clips.
    assert!(a.approx_kl.abs() < 1e-6, "approx KL {}", a.approx_kl);
    assert_eq!(b.clip_fraction, 0.0);
    assert_eq!(a.tokens, b.tokens);
    for (x, y, what) in [
        (a.entropy, b.entropy, "entropy"),
        (a.kl, b.kl, "KL"),
        (a.value_loss, b.value_loss, "value loss"),
        (a.actor_grad_norm, b.actor_grad_norm, "actor grad norm"),
        (a.critic_grad_norm, b.critic_grad_norm, "critic grad norm"),
    ] {
        assert!(
            (x - y).abs() <= 1e-4 * x.abs().max(1e-3),
            "{what}: {x} vs {y}"
        );
    }
    // Same gradients, so the same step; Adam's first step is lr * sign(g) wherever g is not
    // tiny, so compare against the size of the step.
    let d = max_diff(&plain.passes.model, &clipped.passes.model);
    assert!(d < 1e-6, "weights differ by {d}");
    let moved = max_diff(&plain.passes.model, &model);
    assert!(moved > 5e-6, "the update moved the weights by only {moved}");
    assert_ne!(plain.passes.critic, Critic::new(model.hidden_size(), 1));
    assert_eq!(plain.passes.actor_opt.step, 1);
    assert_eq!(plain.passes.critic_opt.step, 1);
    // The reference model never moves.
    assert_eq!(max_diff(&plain.passes.reference, &model), 0.0);
    // Every number is finite, and the entropy of a near-uniform random init is large.
    assert!(a.entropy > 1.0, "{}", a.entropy);
    // The first response lost its end-of-text: 1 + 3 + 3 + 3 scored tokens at most.
    assert!(a.tokens <= 10);
}

#[test]
fn gpt2_clipped_update_equals_reference_update() {
    clipped_equals_reference(gpt2_tiny(), 50256);
}

#[test]
fn llama_clipped_update_equals_reference_update() {
    clipped_equals_reference(llama_tiny(), 2);
}

/// The batch-mean baseline: the actor takes the step a value head predicting mean(r) for every
/// episode would give, a shift of every reward changes nothing for the actor, and the value head
/// still trains.
#[test]
fn batch_mean_baseline_is_r_minus_the_mean_reward() {
    use pgsrm::ppo::config::Baseline;
    let model = gpt2_tiny();
    let eos = 50256;
    let rewards = [1.0f32, 0.0, 0.5, 0.25];
    let mean = rewards.iter().sum::<f32>() / rewards.len() as f32;
    let batch_mean = PpoConfig {
        baseline: Baseline::BatchMean,
        ..PpoConfig::default()
    };
    let mut a = policy(&model, batch_mean.clone(), eos);
    a.update(&episodes(&model, eos, &rewards), 5e-5, &mut Rng::new(1))
        .unwrap();
    // The paper's baseline with a value head that says `mean` whatever it reads.
    let mut b = policy(&model, PpoConfig::default(), eos);
    b.passes.critic.w.data.fill(0.0);
    b.passes.critic.b.data[0] = mean;
    b.update(&episodes(&model, eos, &rewards), 5e-5, &mut Rng::new(1))
        .unwrap();
    let d = max_diff(&a.passes.model, &b.passes.model);
    assert!(d < 1e-7, "the actors differ by {d}");
    // Shifted rewards: the same actor step, the value head chases the new rewards instead.
    let shifted: Vec<f32> = rewards.iter().map(|r| r + 0.5).collect();
    let mut c = policy(&model, batch_mean, eos);
    c.update(&episodes(&model, eos, &shifted), 5e-5, &mut Rng::new(1))
        .unwrap();
    let d = max_diff(&a.passes.model, &c.passes.model);
    assert!(d < 1e-7, "a shift of the rewards changed the actor by {d}");
    assert_ne!(a.passes.critic, c.passes.critic);
    assert_ne!(a.passes.critic, Critic::new(model.hidden_size(), 1));
    // Against the value head's baseline the same episodes give another step.
    let mut e = policy(&model, PpoConfig::default(), eos);
    e.update(&episodes(&model, eos, &rewards), 5e-5, &mut Rng::new(1))
        .unwrap();
    assert!(max_diff(&a.passes.model, &e.passes.model) > 1e-6);
}

#[test]
fn several_epochs_and_minibatches_run_and_whiten() {
    let model = llama_tiny();
    let eps = episodes(&model, 2, &[1.0, 0.0, 0.5, 0.25]);
    let cfg = PpoConfig {
        clip_range: Some(0.2),
        ppo_epochs: 2,
        minibatches: 2,
        whiten_advantages: true,
        value_clip: Some(0.2),
        actor_lr: 1e-3,
        ..PpoConfig::default()
    };
    let mut p = policy(&model, cfg, 2);
    let s = p.update(&eps, 5e-5, &mut Rng::new(3)).unwrap();
    assert_eq!(p.passes.actor_opt.step, 4);
    // Later steps see a moved policy: the ratio leaves 1.
    assert!(s.approx_kl > 0.0, "{}", s.approx_kl);
    assert!(s.policy_loss.is_finite() && s.critic_loss.is_finite());
}

fn nan_leaves_everything(cfg: PpoConfig, bad: f32) {
    let model = gpt2_tiny();
    let eos = 50256;
    let eps = episodes(&model, eos, &[1.0, 0.0, bad, 0.25]);
    let mut p = policy(&model, cfg, eos);
    let before = p.state().unwrap();
    let mut rng = Rng::new(5);
    let e = p
        .update(&eps, 5e-5, &mut rng)
        .expect_err("a non-finite reward must fail");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("loss") && msg.contains("nothing was applied"),
        "{msg}"
    );
    assert_eq!(max_diff(&p.passes.model, &before.model), 0.0);
    assert_eq!(p.passes.critic, before.critic);
    assert_eq!(p.passes.actor_opt, before.actor_opt);
    assert_eq!(p.passes.critic_opt, before.critic_opt);
    assert_eq!(rng, Rng::new(5));
}

#[test]
fn non_finite_loss_is_an_error_with_weights_untouched() {
    nan_leaves_everything(PpoConfig::default(), f32::NAN);
    nan_leaves_everything(PpoConfig::default(), f32::INFINITY);
    // Several steps: a later step may fail after earlier ones were applied; they are undone.
    nan_leaves_everything(
        PpoConfig {
            minibatches: 4,
            ..PpoConfig::default()
        },
        f32::NAN,
    );
    // A learning rate so large that the first of two epochs sends the weights to 1e30: the
    // second epoch's loss is not finite, and the first epoch's step is undone.
    let model = gpt2_tiny();
    let eps = episodes(&model, 50256, &[1.0, 0.0, 0.5, 0.25]);
    let cfg = PpoConfig {
        ppo_epochs: 2,
        actor_lr: 1e30,
        weight_decay: 0.0,
        ..PpoConfig::default()
    };
    let mut p = policy(&model, cfg, 50256);
    let before = p.state().unwrap();
    let e = p
        .update(&eps, 5e-5, &mut Rng::new(5))
        .expect_err("must fail");
    assert!(format!("{e:#}").contains("nothing was applied"), "{e:#}");
    assert_eq!(max_diff(&p.passes.model, &before.model), 0.0);
    assert_eq!(p.passes.actor_opt, before.actor_opt);
    assert_eq!(p.passes.critic, before.critic);
}

#[test]
fn mismatched_parts_are_rejected() {
    let model = gpt2_tiny();
    let e = CpuPolicy::new(
        PpoConfig::default(),
        model.clone(),
        llama_tiny(),
        Critic::new(128, 0),
        50256,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("reference"), "{e}");
    let e = CpuPolicy::new(
        PpoConfig::default(),
        model.clone(),
        model.clone(),
        Critic::new(64, 0),
        50256,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("value head"), "{e}");
    let bad = PpoConfig {
        clip_range: Some(-1.0),
        ..PpoConfig::default()
    };
    let e = CpuPolicy::new(bad, model.clone(), model, Critic::new(128, 0), 50256)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("clip_range"), "{e}");
}
