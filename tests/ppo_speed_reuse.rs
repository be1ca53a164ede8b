//! The update that differentiates the rollout's own forward pass, where every token prefix that
//! prompts share runs once, equals the update that runs the policy again on the padded batch:
//! tiny GPT-2 and Llama children; prompts that share nothing, part of their tokens (one common
//! prefix, or two groups with prefixes of their own) or all of them (a repeated prompt, a prompt
//! that is the start of another); prompts of different lengths, so the plain batch is padded;
//! responses with and without end-of-text, end-of-text trained or masked, two updates in a row.
//! The rollout itself is unchanged: the same tokens and log-probabilities as without the kept
//! pass.

use pgsrm::cpu::policy::CpuPolicy;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::llama::{Llama, LlamaConfig};
use pgsrm::model::spec::Model;
use pgsrm::ppo::{Critic, Episode, PolicyBackend, PpoConfig, UpdateLosses};
use pgsrm::rng::Rng;
use pgsrm::sample::{Generator, SamplingParams};

fn gpt2_tiny() -> Model {
    Model::Gpt2(Gpt2::random(Gpt2Config::named("tiny").unwrap(), 4))
}

fn llama_tiny() -> Model {
    let cfg = LlamaConfig::tiny();
    Model::Llama(Llama::random(cfg, 7))
}

/// How the prompts of a test batch share their tokens.
#[derive(Clone, Copy, Debug)]
enum Sharing {
    /// Six prompts of different lengths with different first tokens, then three that repeat
    /// earlier ones.
    Nothing,
    /// One prefix of six tokens, then suffixes of 1 to 4 tokens; one prompt is the prefix
    /// alone, one is the start of another prompt, two are repeats.
    OnePrefix,
    /// Two groups with prefixes of their own (5 and 3 tokens) and a prompt that shares nothing.
    TwoGroups,
}

const SHARINGS: [Sharing; 3] = [Sharing::Nothing, Sharing::OnePrefix, Sharing::TwoGroups];

fn prompts(model: &Model, round: usize, sharing: Sharing) -> Vec<Vec<u32>> {
    let v = model.vocab_size() as u32;
    let tok = |x: usize| (x as u32) % (v - 1);
    let seq = |from: usize, len: usize, step: usize| -> Vec<u32> {
        (0..len).map(|j| tok(from + j * step)).collect()
    };
    let mut out: Vec<Vec<u32>> = match sharing {
        Sharing::Nothing => (0..6)
            .map(|i| seq(i * 11 + round * 3, 1 + (i * 3 + round) % 7, 5))
            .collect(),
        Sharing::OnePrefix => {
            let prefix = seq(3 + round, 6, 7);
            let mut p: Vec<Vec<u32>> = (0..5)
                .map(|i| {
                    let mut x = prefix.clone();
                    x.extend(seq(40 + i * 13 + round, 1 + (i + round) % 4, 3));
                    x
                })
                .collect();
            p.push(prefix.clone());
            let mut start_of_another = p[1].clone();
            start_of_another.extend(seq(90, 2, 1));
            p.push(start_of_another);
            p
        }
        Sharing::TwoGroups => {
            let (a, b) = (seq(5 + round, 5, 2), seq(60 + round, 3, 9));
            let mut p = Vec::new();
            for i in 0..3 {
                let mut x = a.clone();
                x.extend(seq(20 + i * 5, 1 + i, 1));
                p.push(x);
                let mut y = b.clone();
                y.extend(seq(70 + i * 3, 2 + i % 2, 4));
                p.push(y);
            }
            p.push(seq(99 + round, 4, 1));
            p
        }
    };
    for i in [0, 2, 2] {
        out.push(out[i].clone());
    }
    out
}

fn params() -> SamplingParams {
    SamplingParams {
        max_new_tokens: 3,
        ..SamplingParams::default()
    }
}

/// An end-of-text id that the rollouts of round 0 sample: the second token of the second row
/// when end-of-text is some other id, so that this row stops there.
fn pick_eos(model: &Model, sharing: Sharing) -> u32 {
    let g = pgsrm::cpu::model::generate(
        model,
        &prompts(model, 0, sharing),
        &params(),
        0,
        &mut Rng::new(17),
    )
    .unwrap();
    g[1].tokens[1]
}

fn policy(model: &Model, cfg: PpoConfig, eos: u32, reuse: bool) -> CpuPolicy {
    let critic = Critic::new(model.hidden_size(), 1);
    let mut p = CpuPolicy::new(cfg, model.clone(), model.clone(), critic, eos).unwrap();
    p.reuse_rollout = reuse;
    p
}

/// One trainer-like round: generate, reward, update. Returns the episodes and losses.
fn round(
    p: &mut CpuPolicy,
    r: usize,
    sharing: Sharing,
    rng: &mut Rng,
) -> (Vec<Episode>, UpdateLosses) {
    let pr = prompts(&p.passes.model, r, sharing);
    let gens = p.generate(&pr, &params(), rng).unwrap();
    let eps: Vec<Episode> = pr
        .into_iter()
        .zip(gens)
        .enumerate()
        .map(|(i, (prompt, g))| Episode {
            prompt,
            response: g.tokens,
            logprobs: g.logprobs,
            reward: (i % 3) as f32 * 0.4 - 0.3,
        })
        .collect();
    let l = p.update(&eps, 0.05, rng).unwrap();
    (eps, l)
}

/// max |a - b| over all weights, and max |a| for scale.
fn diff(a: &Model, b: &Model) -> (f32, f32) {
    let pa = pgsrm::ppo::policy::params(a);
    let pb = pgsrm::ppo::policy::params(b);
    let (mut d, mut s) = (0.0f32, 0.0f32);
    for (x, y) in pa.iter().zip(&pb) {
        for (u, w) in x.data.iter().zip(&y.data) {
            d = d.max((u - w).abs());
            s = s.max(u.abs());
        }
    }
    (d, s)
}

fn close(x: f32, y: f32, what: &str) {
    assert!(
        (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1e-3),
        "{what}: {x} with the kept pass, {y} without"
    );
}

fn reuse_equals_plain(model: Model) {
    for sharing in SHARINGS {
        reuse_equals_plain_with(&model, sharing);
    }
}

fn reuse_equals_plain_with(model: &Model, sharing: Sharing) {
    let eos = pick_eos(model, sharing);
    for train_eos in [true, false] {
        let cfg = PpoConfig {
            train_eos,
            // With eps far above every gradient, Adam's first step is lr * g: rounding noise in
            // a gradient that is zero in exact arithmetic (the key bias, for one) stays noise
            // instead of becoming a full step of either sign.
            actor_lr: 0.1,
            critic_lr: 0.1,
            eps: 1.0,
            ..PpoConfig::default()
        };
        let mut fast = policy(model, cfg.clone(), eos, true);
        let mut plain = policy(model, cfg, eos, false);
        let (mut rf, mut rp) = (Rng::new(17), Rng::new(17));
        let mut saw_eos = false;
        for r in 0..2 {
            let what = format!("{sharing:?}, train_eos {train_eos}, round {r}");
            let (ef, lf) = round(&mut fast, r, sharing, &mut rf);
            let (ep, lp) = round(&mut plain, r, sharing, &mut rp);
            // The same tokens; log-probs equal up to rounding, since the kept pass computes
            // a shared prefix once, in products of other shapes (and, from round 1, the weights
            // are equal up to rounding).
            for (a, b) in ef.iter().zip(&ep) {
                assert_eq!(a.prompt, b.prompt);
                assert_eq!(a.response, b.response, "{what}");
                for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                    assert!((x - y).abs() <= 1e-5, "{what}: log-prob {x} vs {y}");
                }
            }
            assert_eq!(rf.s, rp.s, "{what}");
            saw_eos |= ef.iter().any(|e| e.response.contains(&eos));
            assert_eq!(lf.tokens, lp.tokens);
            close(
                lf.policy_loss,
                lp.policy_loss,
                &format!("{what}: policy loss"),
            );
            close(lf.value_loss, lp.value_loss, &format!("{what}: value loss"));
            close(lf.entropy, lp.entropy, &format!("{what}: entropy"));
            close(lf.kl, lp.kl, &format!("{what}: KL"));
            close(
                lf.actor_grad_norm,
                lp.actor_grad_norm,
                &format!("{what}: actor grad norm"),
            );
            close(
                lf.critic_grad_norm,
                lp.critic_grad_norm,
                &format!("{what}: critic grad norm"),
            );
            close(lf.value_mean, lp.value_mean, &format!("{what}: value mean"));
            let (d, scale) = diff(&fast.passes.model, &plain.passes.model);
            assert!(
                d <= 1e-5 * scale,
                "{what}: weights differ by {d} (largest weight {scale})"
            );
            let (moved, _) = diff(&fast.passes.model, model);
            assert!(moved > 1e-4, "the update moved the weights by only {moved}");
            for (a, b) in fast
                .passes
                .critic
                .w
                .data
                .iter()
                .zip(&plain.passes.critic.w.data)
            {
                assert!((a - b).abs() <= 1e-6, "value head {a} vs {b}");
            }
        }
        assert!(saw_eos, "{sharing:?}: some response holds end-of-text");
    }
}

#[test]
fn gpt2_update_on_the_kept_rollout_pass_equals_the_plain_update() {
    reuse_equals_plain(gpt2_tiny());
}

#[test]
fn llama_update_on_the_kept_rollout_pass_equals_the_plain_update() {
    reuse_equals_plain(llama_tiny());
}

#[test]
fn several_steps_and_changed_episodes_take_the_plain_path() {
    let model = llama_tiny();
    let eos = pick_eos(&model, Sharing::OnePrefix);
    let cfg = PpoConfig {
        ppo_epochs: 2,
        actor_lr: 1e-3,
        ..PpoConfig::default()
    };
    let mut fast = policy(&model, cfg.clone(), eos, true);
    let mut plain = policy(&model, cfg, eos, false);
    let (mut rf, mut rp) = (Rng::new(3), Rng::new(3));
    let (ef, _) = round(&mut fast, 0, Sharing::OnePrefix, &mut rf);
    let (ep, _) = round(&mut plain, 0, Sharing::OnePrefix, &mut rp);
    assert_eq!(ef, ep);
    // Two epochs: no kept pass, the same arithmetic bit for bit.
    assert_eq!(diff(&fast.passes.model, &plain.passes.model).0, 0.0);

    // Episodes that are not the rollout's: the update runs the policy on them.
    let one = PpoConfig {
        actor_lr: 1e-3,
        ..PpoConfig::default()
    };
    let mut fast = policy(&model, one.clone(), eos, true);
    let mut plain = policy(&model, one, eos, false);
    let pr = prompts(&model, 1, Sharing::OnePrefix);
    let mut gens = fast.generate(&pr, &params(), &mut Rng::new(8)).unwrap();
    gens[0].tokens[0] = (gens[0].tokens[0] + 1) % (model.vocab_size() as u32);
    let eps: Vec<Episode> = pr
        .into_iter()
        .zip(gens)
        .map(|(prompt, g)| Episode {
            prompt,
            response: g.tokens,
            logprobs: g.logprobs,
            reward: 0.5,
        })
        .collect();
    fast.update(&eps, 0.05, &mut Rng::new(1)).unwrap();
    plain.update(&eps, 0.05, &mut Rng::new(1)).unwrap();
    assert_eq!(diff(&fast.passes.model, &plain.passes.model).0, 0.0);
}
