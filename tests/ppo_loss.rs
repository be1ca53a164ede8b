//! The loss math of the policy update: a hand-worked example, the clipped surrogate against the
//! reference loss, and the hand-written logit gradient against finite differences.

use pgsrm::ppo::PpoConfig;
use pgsrm::ppo::loss::{ActorInputs, actor_loss, critic_loss};
use pgsrm::rng::Rng;

fn close(a: f32, b: f64, tol: f64, what: &str) {
    assert!((a as f64 - b).abs() <= tol, "{what}: got {a}, expected {b}");
}

#[test]
fn hand_worked_example() {
    let ln2 = std::f64::consts::LN_2;
    let ln3 = 3f64.ln();
    // Vocabulary of 3, two scored tokens.
    // Token 0: logits [0, 0, ln 2] -> exp [1, 1, 2], p = [1/4, 1/4, 1/2], lse = ln 4.
    //   Sampled token 2: logp = ln 2 - ln 4 = -ln 2. Entropy = -(2 (1/4) ln(1/4) + (1/2) ln(1/2))
    //   = 1.5 ln 2. Reference logp -ln 4, so logp - logp_ref = ln 2.
    // Token 1: logits [0, 0, 0], uniform. Sampled token 0: logp = -ln 3, entropy ln 3.
    //   Reference logp -ln 3, so logp - logp_ref = 0.
    // Token 0 belongs to a sequence with r = 1, V = 0.5 (A = 0.5); token 1 to one with r = 0,
    // V = 0.25 (A = -0.25).
    // policy = -((-ln 2)(0.5) + (-ln 3)(-0.25)) / 2 = (0.5 ln 2 - 0.25 ln 3) / 2 = 0.035960259
    // entropy = (1.5 ln 2 + ln 3) / 2 = 1.069166530
    // KL = (ln 2 + 0) / 2 = 0.346573590
    // actor = policy - 0.01 entropy + 0.1 KL = 0.059925953 (kl_coef 0.1 to make its term visible)
    let logits = [0.0, 0.0, ln2 as f32, 0.0, 0.0, 0.0];
    let cfg = PpoConfig::default();
    let out = actor_loss(
        &ActorInputs {
            logits: &logits,
            vocab: 3,
            tokens: &[2, 0],
            old_logprobs: &[-ln2 as f32, -ln3 as f32],
            ref_logprobs: &[-(4f64.ln()) as f32, -ln3 as f32],
            advantages: &[0.5, -0.25],
        },
        &cfg,
        0.1,
    );
    close(out.policy, 0.035960259, 1e-6, "policy loss");
    close(out.entropy, 1.069166530, 1e-6, "entropy");
    close(out.kl, 0.346573590, 1e-6, "KL");
    close(out.actor, 0.059925953, 1e-6, "actor loss");
    close(out.logprobs[0], -ln2, 1e-6, "logp 0");
    close(out.logprobs[1], -ln3, 1e-6, "logp 1");
    // The rollout log-probs equal the actor's: ratio 1, approx KL 0, nothing clipped.
    close(out.approx_kl, 0.0, 1e-7, "approx KL");
    close(out.clip_fraction, 0.0, 0.0, "clip fraction");
    // dL/dz for token 0: g = (-A + kl_coef) / M = (-0.5 + 0.1) / 2 = -0.2 on d logp, and
    // entropy_coef / M = 0.005 on -dH. E_p[z] = 0.5 ln 2.
    // dz_k = g (onehot_k - p_k) + 0.005 p_k (z_k - E[z]):
    //   k = 0, 1: 0.2 (0.25) + 0.005 (0.25)(0 - 0.5 ln 2) = 0.05 - 0.000433217 = 0.049566783
    //   k = 2: -0.2 (1 - 0.5) + 0.005 (0.5)(ln 2 - 0.5 ln 2) = -0.1 + 0.000866434 = -0.099133566
    close(out.dlogits[0], 0.049566783, 1e-7, "dz[0][0]");
    close(out.dlogits[1], 0.049566783, 1e-7, "dz[0][1]");
    close(out.dlogits[2], -0.099133566, 1e-7, "dz[0][2]");
    // Token 1: uniform, so the entropy term vanishes (z_k = E[z]); g = (0.25 + 0.1) / 2 = 0.175.
    //   k = 0: 0.175 (1 - 1/3) = 0.116666667; k = 1, 2: -0.175 / 3 = -0.058333333
    close(out.dlogits[3], 0.116666667, 1e-7, "dz[1][0]");
    close(out.dlogits[4], -0.058333333, 1e-7, "dz[1][1]");
    close(out.dlogits[5], -0.058333333, 1e-7, "dz[1][2]");

    // Critic: V = [0.5, 0.25], r = [1, 0]: errors [-0.5, 0.25], MSE = (0.25 + 0.0625) / 2
    // = 0.15625, critic loss 0.078125, dV = error / 2 = [-0.25, 0.125].
    let (mse, loss, dv) = critic_loss(&[0.5, 0.25], &[0.5, 0.25], &[1.0, 0.0], None);
    close(mse, 0.15625, 1e-7, "value loss");
    close(loss, 0.078125, 1e-7, "critic loss");
    close(dv[0], -0.25, 1e-7, "dV 0");
    close(dv[1], 0.125, 1e-7, "dV 1");
    // Value clipping at 0.1 around old values [0.3, 0.25]: V0 = 0.5 clips to 0.4, whose error
    // (-0.6)^2 = 0.36 beats 0.25 and has no gradient; V1 is unchanged.
    // MSE = (0.36 + 0.0625) / 2 = 0.21125.
    let (mse, _, dv) = critic_loss(&[0.5, 0.25], &[0.3, 0.25], &[1.0, 0.0], Some(0.1));
    close(mse, 0.21125, 1e-6, "clipped value loss");
    close(dv[0], 0.0, 0.0, "clipped dV 0");
    close(dv[1], 0.125, 1e-7, "clipped dV 1");
}

/// Logits, tokens, rollout log-probs, reference log-probs and advantages.
type Inputs = (Vec<f32>, Vec<u32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn random_inputs(rng: &mut Rng, m: usize, v: usize) -> Inputs {
    let logits: Vec<f32> = (0..m * v).map(|_| (rng.normal() * 2.0) as f32).collect();
    let tokens: Vec<u32> = (0..m).map(|_| rng.below(v) as u32).collect();
    let old: Vec<f32> = (0..m)
        .map(|_| (-1.0 - rng.uniform() * 2.0) as f32)
        .collect();
    let refl: Vec<f32> = (0..m)
        .map(|_| (-1.0 - rng.uniform() * 2.0) as f32)
        .collect();
    let adv: Vec<f32> = (0..m).map(|_| rng.normal() as f32).collect();
    (logits, tokens, old, refl, adv)
}

#[test]
fn clipped_loss_equals_reference_loss_at_ratio_one() {
    let mut rng = Rng::new(3);
    let (logits, tokens, _, refl, adv) = random_inputs(&mut rng, 5, 11);
    let plain = PpoConfig::default();
    let inputs = |old: &[f32]| -> Vec<f32> { old.to_vec() };
    // The rollout log-probs are the actor's own (one epoch, one minibatch, fresh samples).
    let first = actor_loss(
        &ActorInputs {
            logits: &logits,
            vocab: 11,
            tokens: &tokens,
            old_logprobs: &[0.0; 5],
            ref_logprobs: &refl,
            advantages: &adv,
        },
        &plain,
        5e-5,
    );
    let old = inputs(&first.logprobs);
    let run = |cfg: &PpoConfig| {
        actor_loss(
            &ActorInputs {
                logits: &logits,
                vocab: 11,
                tokens: &tokens,
                old_logprobs: &old,
                ref_logprobs: &refl,
                advantages: &adv,
            },
            cfg,
            5e-5,
        )
    };
    let a = run(&plain);
    let b = run(&PpoConfig {
        clip_range: Some(0.2),
        ..PpoConfig::default()
    });
    // The update is the same: the gradient of -mean(ratio A) at ratio 1 is that of
    // -mean(logp A). The logged values differ by construction: at ratio 1 the surrogate is
    // -mean(A), the reference's value is -mean(logp A).
    let mean_adv = adv.iter().map(|&x| x as f64).sum::<f64>() / adv.len() as f64;
    assert!((b.policy as f64 + mean_adv).abs() < 1e-6, "{}", b.policy);
    let mean_lpa = first
        .logprobs
        .iter()
        .zip(&adv)
        .map(|(&l, &a)| l as f64 * a as f64)
        .sum::<f64>()
        / adv.len() as f64;
    assert!((a.policy as f64 + mean_lpa).abs() < 1e-6, "{}", a.policy);
    assert_eq!((a.entropy, a.kl), (b.entropy, b.kl));
    assert_eq!(b.clip_fraction, 0.0);
    assert!(b.approx_kl.abs() < 1e-7);
    for (x, y) in a.dlogits.iter().zip(&b.dlogits) {
        assert!((x - y).abs() < 1e-6, "{x} {y}");
    }
}

/// Central differences of the actor loss in f64 against the hand-written gradient, with and
/// without clipping; the old log-probs are far from the actor's so that some ratios clip.
#[test]
fn actor_dlogits_match_finite_differences() {
    let (m, v) = (4, 7);
    let mut rng = Rng::new(11);
    let (logits, tokens, _, refl, adv) = random_inputs(&mut rng, m, v);
    // Rollout log-probs near the actor's, so that some ratios leave [0.8, 1.2] and some do not.
    let own = actor_loss(
        &ActorInputs {
            logits: &logits,
            vocab: v,
            tokens: &tokens,
            old_logprobs: &refl,
            ref_logprobs: &refl,
            advantages: &adv,
        },
        &PpoConfig::default(),
        0.0,
    )
    .logprobs;
    let old: Vec<f32> = own
        .iter()
        .zip([0.5f32, -0.05, 0.4, 0.1])
        .map(|(l, d)| l + d)
        .collect();
    for clip in [None, Some(0.2)] {
        let cfg = PpoConfig {
            clip_range: clip,
            entropy_coef: 0.3,
            ..PpoConfig::default()
        };
        let loss_at = |z: &[f32]| {
            actor_loss(
                &ActorInputs {
                    logits: z,
                    vocab: v,
                    tokens: &tokens,
                    old_logprobs: &old,
                    ref_logprobs: &refl,
                    advantages: &adv,
                },
                &cfg,
                0.7,
            )
        };
        let base = loss_at(&logits);
        if clip.is_some() {
            assert!(
                base.clip_fraction > 0.0 && base.clip_fraction < 1.0,
                "the example should clip some tokens, not all: {}",
                base.clip_fraction
            );
        }
        let h = 1e-3f32;
        let mut worst = 0.0f64;
        for k in 0..m * v {
            let mut zp = logits.clone();
            zp[k] += h;
            let mut zm = logits.clone();
            zm[k] -= h;
            let num = (loss_at(&zp).actor as f64 - loss_at(&zm).actor as f64) / (2.0 * h as f64);
            let err = (num - base.dlogits[k] as f64).abs();
            worst = worst.max(err);
            assert!(
                err < 2e-4 + 1e-2 * num.abs(),
                "clip {clip:?} logit {k}: numeric {num}, analytic {}",
                base.dlogits[k]
            );
        }
        assert!(worst.is_finite());
    }
}
