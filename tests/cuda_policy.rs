//! The device policy backend against the CPU one on tiny GPT-2 and Llama (GQA) children, on the
//! emulated device and on a CUDA device when one is present: the same rollouts for the same
//! generator, the same update (weights, value head, optimiser moments, losses) for both
//! objectives, deterministic updates, checkpoints that move between backends, and a non-finite
//! reward that changes nothing.

mod devices;

use devices::devices;
use pgsrm::cpu::policy::CpuPolicy;
use pgsrm::cuda::device::Gpu;
use pgsrm::cuda::policy::CudaPolicy;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::llama::{Llama, LlamaConfig};
use pgsrm::model::spec::Model;
use pgsrm::ppo::policy::params;
use pgsrm::ppo::{Critic, Episode, PolicyBackend, PolicyState, PpoConfig, UpdateLosses};
use pgsrm::rng::Rng;
use pgsrm::sample::{Generator, SamplingParams};
use pgsrm::tensor::Tensor;

const EOS: u32 = 3;
const TOL: f32 = 1e-4;

/// Every parameter moved by up to 0.02. A fresh GPT-2's biases are zero, and the key bias's
/// gradient is zero but for rounding (it shifts a query's scores all alike), so AdamW moves it by
/// an amount that depends on the rounding alone: nonzero biases give that tensor a scale to be
/// measured against.
fn jitter(mut model: Model) -> Model {
    let mut rng = Rng::new(17);
    let tensors = match &mut model {
        Model::Gpt2(m) => m.weights.named_mut(),
        Model::Llama(m) => m.weights.named_mut(),
    };
    for (_, t) in tensors {
        for x in t.data.iter_mut() {
            *x += (0.04 * (rng.uniform() - 0.5)) as f32;
        }
    }
    model
}

fn gpt2_tiny() -> Model {
    let cfg: Gpt2Config = serde_json::from_str(
        r#"{"vocab_size": 61, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}"#,
    )
    .unwrap();
    jitter(Model::Gpt2(Gpt2::random(cfg, 5)))
}

/// Six query heads over two key/value heads.
fn llama_tiny() -> Model {
    jitter(Model::Llama(Llama::random(LlamaConfig::tiny(), 7)))
}

/// The paper's update: the default settings. Its first AdamW step moves each weight by about the
/// learning rate whatever its gradient's size, so a gradient of the wrong sign shows in the
/// weights, and one of the wrong size in the moments.
fn paper() -> PpoConfig {
    PpoConfig::default()
}

/// The clipped objective over two epochs of two minibatches, with value clipping and whitened
/// advantages.
fn clipped() -> PpoConfig {
    PpoConfig {
        clip_range: Some(0.2),
        ppo_epochs: 2,
        minibatches: 2,
        value_clip: Some(0.2),
        whiten_advantages: true,
        ..paper()
    }
}

fn prompts(model: &Model) -> Vec<Vec<u32>> {
    let v = model.vocab_size() as u32;
    (0..5)
        .map(|i| {
            (0..2 + i * 2)
                .map(|j| (4 + i * 7 + j * 3) as u32 % v)
                .collect()
        })
        .collect()
}

fn sampling() -> SamplingParams {
    SamplingParams {
        max_new_tokens: 5,
        ..SamplingParams::default()
    }
}

/// Episodes of the generations with a reward each; one response is cut after one token and an
/// end-of-text, so the mask has something to drop, and one is an end-of-text alone, so without
/// `train_eos` it has no token to score.
fn episodes(prompts: &[Vec<u32>], gens: &[pgsrm::sample::Generation]) -> Vec<Episode> {
    let mut eps: Vec<Episode> = prompts
        .iter()
        .zip(gens)
        .enumerate()
        .map(|(i, (p, g))| Episode {
            prompt: p.clone(),
            response: g.tokens.clone(),
            logprobs: g.logprobs.clone(),
            reward: (i as f32 * 0.37) % 1.0,
        })
        .collect();
    let e = &mut eps[1];
    e.response.truncate(1);
    e.logprobs.truncate(1);
    e.response.push(EOS);
    e.logprobs.push(-1.0);
    let e = &mut eps[3];
    e.response = vec![EOS];
    e.logprobs = vec![-2.0];
    eps
}

fn cpu_policy(model: &Model, cfg: &PpoConfig) -> CpuPolicy {
    let critic = Critic::new(model.hidden_size(), 1);
    CpuPolicy::new(cfg.clone(), model.clone(), model.clone(), critic, EOS).unwrap()
}

fn backends(model: &Model, cfg: &PpoConfig, g: Gpu) -> (CpuPolicy, CudaPolicy) {
    let critic = Critic::new(model.hidden_size(), 1);
    let cpu = cpu_policy(model, cfg);
    let dev = CudaPolicy::new(
        std::sync::Arc::new(g),
        cfg.clone(),
        model.clone(),
        model.clone(),
        critic,
        EOS,
    )
    .unwrap();
    (cpu, dev)
}

/// max |a - b| over max |a|: a tensor's difference relative to its own scale.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// Every tensor of a state: parameters, value head, both optimisers' moments.
fn tensors(s: &PolicyState) -> Vec<&Tensor> {
    let mut out = params(&s.model);
    out.extend([&s.critic.w, &s.critic.b]);
    for opt in [&s.actor_opt, &s.critic_opt] {
        out.extend(opt.m.iter().chain(&opt.v));
    }
    out
}

/// The worst per-tensor relative difference of two states of the same step.
fn state_diff(a: &PolicyState, b: &PolicyState) -> f32 {
    assert_eq!(a.actor_opt.step, b.actor_opt.step);
    assert_eq!(a.critic_opt.step, b.critic_opt.step);
    tensors_diff(a, b)
}

fn tensors_diff(a: &PolicyState, b: &PolicyState) -> f32 {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    ta.iter()
        .zip(&tb)
        .map(|(x, y)| rel(&x.data, &y.data))
        .fold(0.0, f32::max)
}

fn same_bits(a: &PolicyState, b: &PolicyState) -> bool {
    let (ta, tb) = (tensors(a), tensors(b));
    ta.len() == tb.len()
        && ta.iter().zip(&tb).all(|(x, y)| {
            x.data
                .iter()
                .zip(&y.data)
                .all(|(u, w)| u.to_bits() == w.to_bits())
        })
}

/// The worst difference of the reported losses, relative to each one's size (at least 1).
fn losses_diff(a: &UpdateLosses, b: &UpdateLosses) -> f32 {
    assert_eq!(a.tokens, b.tokens);
    let pairs = [
        (a.policy_loss, b.policy_loss),
        (a.value_loss, b.value_loss),
        (a.entropy, b.entropy),
        (a.kl, b.kl),
        (a.kl_coef, b.kl_coef),
        (a.actor_loss, b.actor_loss),
        (a.critic_loss, b.critic_loss),
        (a.approx_kl, b.approx_kl),
        (a.clip_fraction, b.clip_fraction),
        (a.actor_grad_norm, b.actor_grad_norm),
        (a.critic_grad_norm, b.critic_grad_norm),
        (a.value_mean, b.value_mean),
    ];
    pairs
        .iter()
        .map(|&(x, y)| (x - y).abs() / x.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// Rollouts and one update on both backends from the same generator: the tokens must be the
/// same, the log-probs, losses and every tensor after the update within `TOL`.
fn matches_cpu(name: &str, model: Model, cfg: PpoConfig) {
    for g in devices() {
        let device = g.name.clone();
        let (mut cpu, mut dev) = backends(&model, &cfg, g);
        let ps = prompts(&model);
        let (mut r_cpu, mut r_dev) = (Rng::new(11), Rng::new(11));
        let g_cpu = cpu.generate(&ps, &sampling(), &mut r_cpu).unwrap();
        let g_dev = dev.generate(&ps, &sampling(), &mut r_dev).unwrap();
        let mut lp_diff = 0.0f32;
        for (a, b) in g_cpu.iter().zip(&g_dev) {
            assert_eq!(a.tokens, b.tokens, "{name} on {device}: sampled tokens");
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                lp_diff = lp_diff.max((x - y).abs());
            }
        }
        assert!(
            lp_diff < TOL,
            "{name} on {device}: log-probs differ by {lp_diff}"
        );
        let eps = episodes(&ps, &g_cpu);
        let before = cpu.state().unwrap();
        let l_cpu = cpu.update(&eps, 0.1, &mut r_cpu).unwrap();
        let l_dev = dev.update(&eps, 0.1, &mut r_dev).unwrap();
        let (s_cpu, s_dev) = (cpu.state().unwrap(), dev.state().unwrap());
        let moved = params(&before.model)
            .iter()
            .zip(params(&s_cpu.model))
            .map(|(a, b)| rel(&a.data, &b.data))
            .fold(0.0, f32::max);
        let (dw, dl) = (state_diff(&s_cpu, &s_dev), losses_diff(&l_cpu, &l_dev));
        println!(
            "{name} on {device}: weights, value head and moments within {dw:.2e} (the update moved them {moved:.2e}), losses within {dl:.2e}, log-probs within {lp_diff:.2e}"
        );
        // The update moved the weights far more than the backends disagree about where to.
        assert!(
            moved > 100.0 * dw,
            "{name}: the update hardly moved the weights"
        );
        assert!(dw < TOL, "{name} on {device}: state differs by {dw}");
        assert!(
            dl < TOL,
            "{name} on {device}: losses differ by {dl}\n{l_cpu:?}\n{l_dev:?}"
        );
        assert_eq!(r_cpu.clone().next_u64(), r_dev.clone().next_u64());
    }
}

#[test]
fn gpt2_paper_update_matches_the_cpu() {
    matches_cpu("gpt2 paper", gpt2_tiny(), paper());
}

#[test]
fn gpt2_clipped_update_over_epochs_and_minibatches_matches_the_cpu() {
    matches_cpu("gpt2 clipped 2x2", gpt2_tiny(), clipped());
}

#[test]
fn llama_gqa_paper_update_matches_the_cpu() {
    matches_cpu("llama paper", llama_tiny(), paper());
}

#[test]
fn llama_gqa_clipped_update_over_epochs_and_minibatches_matches_the_cpu() {
    matches_cpu("llama clipped 2x2", llama_tiny(), clipped());
}

/// Three rounds of rollout and update on the CPU, on the device differentiating its rollout's
/// recorded pass, and on the device running the policy again: the same tokens every round, and
/// the recorded pass's update within `TOL` of both others (weights, value head, moments,
/// losses). Rollouts of one shape record into the same buffers, replayed as a graph from the
/// second on.
fn recorded_pass_matches(name: &str, model: Model, cfg: PpoConfig) {
    for g in devices() {
        let device = g.name.clone();
        let gpu = std::sync::Arc::new(g);
        let mut cpu = cpu_policy(&model, &cfg);
        let critic = Critic::new(model.hidden_size(), 1);
        let dev_policy = || {
            let (m, r) = (model.clone(), model.clone());
            CudaPolicy::new(gpu.clone(), cfg.clone(), m, r, critic.clone(), EOS).unwrap()
        };
        let (mut dev, mut fresh) = (dev_policy(), dev_policy());
        fresh.reuse_rollout = false;
        let rngs = || Rng::new(23);
        let (mut r_cpu, mut r_dev, mut r_fresh) = (rngs(), rngs(), rngs());
        let ps = prompts(&model);
        for round in 0..3 {
            let g_cpu = cpu.generate(&ps, &sampling(), &mut r_cpu).unwrap();
            let g_dev = dev.generate(&ps, &sampling(), &mut r_dev).unwrap();
            let g_fresh = fresh.generate(&ps, &sampling(), &mut r_fresh).unwrap();
            let tokens = |gs: &[pgsrm::sample::Generation]| -> Vec<Vec<u32>> {
                gs.iter().map(|g| g.tokens.clone()).collect()
            };
            assert_eq!(tokens(&g_dev), tokens(&g_cpu), "{name} round {round}");
            assert_eq!(tokens(&g_fresh), tokens(&g_cpu), "{name} round {round}");
            let eps = |gens: &[pgsrm::sample::Generation]| -> Vec<Episode> {
                ps.iter()
                    .zip(gens)
                    .enumerate()
                    .map(|(i, (p, g))| Episode {
                        prompt: p.clone(),
                        response: g.tokens.clone(),
                        logprobs: g.logprobs.clone(),
                        reward: ((i + round) as f32 * 0.37) % 1.0,
                    })
                    .collect()
            };
            let l_cpu = cpu.update(&eps(&g_cpu), 0.1, &mut r_cpu).unwrap();
            let l_dev = dev.update(&eps(&g_dev), 0.1, &mut r_dev).unwrap();
            let l_fresh = fresh.update(&eps(&g_fresh), 0.1, &mut r_fresh).unwrap();
            let (s_cpu, s_dev, s_fresh) = (
                cpu.state().unwrap(),
                dev.state().unwrap(),
                fresh.state().unwrap(),
            );
            let (dw, dw_fresh) = (state_diff(&s_cpu, &s_dev), state_diff(&s_fresh, &s_dev));
            let (dl, dl_fresh) = (losses_diff(&l_cpu, &l_dev), losses_diff(&l_fresh, &l_dev));
            println!(
                "{name} on {device}, round {round}: the recorded pass's update within {dw:.2e} of the CPU's and {dw_fresh:.2e} of a fresh pass's; losses within {dl:.2e} and {dl_fresh:.2e}"
            );
            assert!(dw < TOL && dw_fresh < TOL, "{name} round {round}: states");
            assert!(dl < TOL && dl_fresh < TOL, "{name} round {round}: losses");
        }
        assert_eq!(dev.passes.reused, 3, "{name}: updates on the recorded pass");
        assert_eq!(fresh.passes.reused, 0);
        // Round 1 recorded its segment as a graph and replayed it; round 2 replayed it.
        assert_eq!(dev.passes.decoding().replays, 2, "{name}: graph replays");
    }
}

#[test]
fn gpt2_update_on_the_recorded_rollout_matches_the_cpu_and_a_fresh_pass() {
    recorded_pass_matches("gpt2", gpt2_tiny(), paper());
}

#[test]
fn llama_gqa_update_on_the_recorded_rollout_matches_the_cpu_and_a_fresh_pass() {
    recorded_pass_matches("llama", llama_tiny(), paper());
}

/// With end-of-text trained, rows that ended keep every token they sampled (without, the
/// default, they keep one fewer).
#[test]
fn an_update_on_the_recorded_rollout_training_eos_matches_the_cpu() {
    let cfg = PpoConfig {
        train_eos: true,
        ..paper()
    };
    recorded_pass_matches("llama, eos trained", llama_tiny(), cfg);
}

/// Episodes from the device's own rollouts.
fn rollout(dev: &mut CudaPolicy, model: &Model, seed: u64) -> Vec<Episode> {
    let ps = prompts(model);
    let gens = dev.generate(&ps, &sampling(), &mut Rng::new(seed)).unwrap();
    episodes(&ps, &gens)
}

#[test]
fn the_same_update_twice_gives_the_same_bits() {
    let model = gpt2_tiny();
    for g in devices() {
        let (_, mut dev) = backends(&model, &clipped(), g);
        let eps = rollout(&mut dev, &model, 2);
        let start = dev.state().unwrap();
        dev.update(&eps, 0.1, &mut Rng::new(4)).unwrap();
        let first = dev.state().unwrap();
        dev.restore(start.clone()).unwrap();
        dev.update(&eps, 0.1, &mut Rng::new(4)).unwrap();
        let second = dev.state().unwrap();
        assert!(!same_bits(&start, &first), "the update changed nothing");
        assert!(same_bits(&first, &second));
    }
}

#[test]
fn a_restored_state_continues_exactly_and_a_cpu_state_restores_onto_the_device() {
    let model = llama_tiny();
    let cfg = paper();
    for g in devices() {
        let (mut cpu, mut dev) = backends(&model, &cfg, g);
        let eps = rollout(&mut dev, &model, 2);
        dev.update(&eps, 0.1, &mut Rng::new(4)).unwrap();
        let saved = dev.state().unwrap();
        // A fresh device policy from the saved state takes the same next step, bit for bit.
        let g2 = if dev.device().starts_with("emulated") {
            Gpu::emulated().unwrap()
        } else {
            Gpu::new(0).unwrap()
        };
        let (_, mut fresh) = backends(&model, &cfg, g2);
        fresh.restore(saved.clone()).unwrap();
        assert!(same_bits(&fresh.state().unwrap(), &saved));
        let next = rollout(&mut dev, &model, 3);
        dev.update(&next, 0.1, &mut Rng::new(5)).unwrap();
        fresh.update(&next, 0.1, &mut Rng::new(5)).unwrap();
        assert!(same_bits(&dev.state().unwrap(), &fresh.state().unwrap()));
        // The CPU's state, restored onto the device, continues as the CPU does.
        cpu.update(&eps, 0.1, &mut Rng::new(4)).unwrap();
        let from_cpu = cpu.state().unwrap();
        fresh.restore(from_cpu.clone()).unwrap();
        assert!(same_bits(&fresh.state().unwrap(), &from_cpu));
        cpu.update(&next, 0.1, &mut Rng::new(5)).unwrap();
        fresh.update(&next, 0.1, &mut Rng::new(5)).unwrap();
        let d = state_diff(&cpu.state().unwrap(), &fresh.state().unwrap());
        assert!(d < TOL, "after a CPU state was restored: {d}");
        // A state of another shape is refused.
        let other = CpuPolicy::new(
            cfg.clone(),
            gpt2_tiny(),
            gpt2_tiny(),
            Critic::new(32, 1),
            EOS,
        )
        .unwrap();
        let err = fresh.restore(other.state().unwrap()).unwrap_err();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    }
}

#[test]
fn a_non_finite_reward_is_an_error_that_changes_nothing() {
    let model = gpt2_tiny();
    for cfg in [paper(), clipped()] {
        for g in devices() {
            let (_, mut dev) = backends(&model, &cfg, g);
            let mut eps = rollout(&mut dev, &model, 2);
            let before = dev.state().unwrap();
            eps[3].reward = f32::NAN;
            let mut rng = Rng::new(4);
            let err = dev.update(&eps, 0.1, &mut rng).unwrap_err();
            assert!(
                format!("{err:#}").contains("nothing was applied"),
                "{err:#}"
            );
            assert!(same_bits(&before, &dev.state().unwrap()));
            assert_eq!(rng.next_u64(), Rng::new(4).next_u64());
            // And the policy still updates afterwards.
            eps[3].reward = 0.5;
            dev.update(&eps, 0.1, &mut rng).unwrap();
            assert!(!same_bits(&before, &dev.state().unwrap()));
        }
    }
}

/// A second device of `g`'s kind, for a policy beside one on `g`.
fn another_like(g: &Gpu) -> Gpu {
    if g.name.starts_with("emulated") {
        Gpu::emulated().unwrap()
    } else {
        Gpu::new(0).unwrap()
    }
}

#[test]
fn the_cached_reference_gives_what_the_uncached_one_gives() {
    for (model, cfg) in [(gpt2_tiny(), clipped()), (llama_tiny(), paper())] {
        for g in devices() {
            let g2 = another_like(&g);
            let (_, mut cached) = backends(&model, &cfg, g);
            let (_, mut plain) = backends(&model, &cfg, g2);
            plain.passes.set_reference_cache_limit(0);
            // The second batch repeats the first's prompts, in another order with one new one.
            let first = rollout(&mut cached, &model, 2);
            let mut second = rollout(&mut cached, &model, 3);
            second.reverse();
            second[0].prompt.push(9);
            for eps in [&first, &second] {
                let a = cached.update(eps, 0.1, &mut Rng::new(4)).unwrap();
                let b = plain.update(eps, 0.1, &mut Rng::new(4)).unwrap();
                assert_eq!(a, b);
                assert!(same_bits(&cached.state().unwrap(), &plain.state().unwrap()));
            }
            let (hits, misses) = cached.passes.reference_cache().hits_misses();
            assert_eq!(cached.passes.reference_cache().len(), 6);
            assert_eq!((hits, misses), (4, 6));
            assert!(plain.passes.reference_cache().is_empty());
        }
    }
}

/// The frozen reference's pass replayed as a graph (once its shape repeats) gives the updates of
/// its kernels launched one by one, bit for bit.
#[test]
fn a_replayed_reference_pass_gives_the_eager_ones_bits() {
    for (model, cfg) in [(gpt2_tiny(), paper()), (llama_tiny(), paper())] {
        for g in devices() {
            let g2 = another_like(&g);
            let g = std::sync::Arc::new(g);
            let critic = Critic::new(model.hidden_size(), 1);
            let (m, r) = (model.clone(), model.clone());
            let mut replayed = CudaPolicy::new(g.clone(), cfg.clone(), m, r, critic, EOS).unwrap();
            let (_, mut eager) = backends(&model, &cfg, g2);
            eager.passes.set_decode_graphs(false);
            let (_, mut source) = backends(&model, &cfg, Gpu::emulated().unwrap());
            let mut graphs = 0;
            for round in 0..3 {
                // Other answers each round, of one shape: the replay reads what each wrote.
                let eps = rollout(&mut source, &model, 2 + round);
                let before = g.launch_counts();
                let a = replayed.update(&eps, 0.1, &mut Rng::new(round)).unwrap();
                graphs += (g.launch_counts() - before).graphs;
                let b = eager.update(&eps, 0.1, &mut Rng::new(round)).unwrap();
                assert_eq!(a, b, "round {round}");
                assert!(same_bits(
                    &replayed.state().unwrap(),
                    &eager.state().unwrap()
                ));
            }
            // Launched one by one the first time, recorded and replayed from the second.
            assert_eq!(
                graphs, 2,
                "the reference pass's graph runs in rounds 2 and 3"
            );
        }
    }
}
