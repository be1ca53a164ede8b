//! The reference model's prompt cache: log-probabilities of the kept response tokens equal the
//! full forward's (`token_logprobs`) on tiny GPT-2 and Llama models, with prompts of different
//! lengths (one of a single token), some sharing a prefix, responses with and without
//! end-of-text, and a second call that finds its prompts in the cache.

use pgsrm::cpu::model::token_logprobs;
use pgsrm::cpu::refcache::RefCache;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::llama::{Llama, LlamaConfig};
use pgsrm::model::spec::Model;
use pgsrm::ppo::Episode;
use pgsrm::ppo::loss::kept_tokens;
use pgsrm::ppo::policy::scored_batch;
use pgsrm::rng::Rng;

fn gpt2_tiny() -> Model {
    Model::Gpt2(Gpt2::random(Gpt2Config::named("tiny").unwrap(), 4))
}

fn llama_tiny() -> Model {
    let cfg = LlamaConfig::tiny();
    Model::Llama(Llama::random(cfg, 7))
}

/// Prompts drawn from a fixed pool of `n_prompts`: the first of one token, odd ones of 1 to 9
/// random tokens, even ones a shared prefix of 4 tokens and 0 to 5 more (so one may be the
/// prefix alone, or the start of another); responses of 1 to 4 random tokens where some hold
/// end-of-text (at the start, in the middle, at the end) and some do not.
fn episodes(model: &Model, eos: u32, n: usize, n_prompts: usize, seed: u64) -> Vec<Episode> {
    let v = model.vocab_size();
    let mut fixed = Rng::new(99);
    let prefix: Vec<u32> = (0..4).map(|_| fixed.below(v - 1) as u32).collect();
    let pool: Vec<Vec<u32>> = (0..n_prompts)
        .map(|i| {
            if i == 0 {
                vec![fixed.below(v - 1) as u32]
            } else if i % 2 == 1 {
                let len = 1 + fixed.below(9);
                (0..len).map(|_| fixed.below(v - 1) as u32).collect()
            } else {
                let mut p = prefix.clone();
                let more = fixed.below(6);
                p.extend((0..more).map(|_| fixed.below(v - 1) as u32));
                p
            }
        })
        .collect();
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let prompt = pool[rng.below(n_prompts)].clone();
            let len = 1 + rng.below(4);
            let mut response: Vec<u32> = (0..len).map(|_| rng.below(v - 1) as u32).collect();
            match i % 4 {
                0 => response[0] = eos,
                1 => response[len - 1] = eos,
                2 => response[len / 2] = eos,
                _ => {}
            }
            let logprobs = vec![-1.0; len];
            Episode {
                prompt,
                response,
                logprobs,
                reward: 0.0,
            }
        })
        .collect()
}

/// The full forward's log-probabilities of every episode's kept tokens.
fn full(model: &Model, eps: &[Episode], eos: u32, train_eos: bool) -> Vec<Vec<f32>> {
    let all: Vec<&Episode> = eps.iter().collect();
    let sb = scored_batch(&all, eos, train_eos).unwrap();
    let flat = token_logprobs(model, &sb.batch, &sb.positions, &sb.tokens).unwrap();
    let mut out = vec![Vec::new(); eps.len()];
    for (&r, lp) in sb.rows.iter().zip(flat) {
        out[r].push(lp);
    }
    out
}

fn check(model: &Model, eos: u32) {
    let mut cache = RefCache::default();
    for train_eos in [false, true] {
        for (round, seed) in [11u64, 12, 13].into_iter().enumerate() {
            let eps = episodes(model, eos, 12, 6, seed);
            let all: Vec<&Episode> = eps.iter().collect();
            let want = full(model, &eps, eos, train_eos);
            let got = cache.logprobs(model, &all, eos, train_eos).unwrap();
            assert_eq!(got.len(), eps.len());
            for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.len(),
                    kept_tokens(&eps[r].response, eos, train_eos),
                    "episode {r}"
                );
                assert_eq!(g.len(), w.len(), "episode {r}");
                for (a, b) in g.iter().zip(w) {
                    assert!(
                        (a - b).abs() <= 1e-5,
                        "episode {r} (round {round}, train_eos {train_eos}): cached {a}, full {b}"
                    );
                }
            }
            if round > 0 || train_eos {
                let (hits, _) = cache.hits_misses();
                assert!(hits > 0, "later calls find their prompts in the cache");
            }
        }
    }
    assert!(!cache.is_empty() && cache.len() <= 6);
    assert!(cache.bytes() > 0);
}

#[test]
fn gpt2_cached_reference_logprobs_equal_the_full_forward() {
    check(&gpt2_tiny(), 7);
}

#[test]
fn llama_cached_reference_logprobs_equal_the_full_forward() {
    check(&llama_tiny(), 3);
}

#[test]
fn a_full_cache_keeps_nothing_more_and_gives_the_same_logprobs() {
    let model = gpt2_tiny();
    let eos = 7;
    let eps = episodes(&model, eos, 10, 5, 21);
    let all: Vec<&Episode> = eps.iter().collect();
    let mut none = RefCache::new(0);
    let a = none.logprobs(&model, &all, eos, true).unwrap();
    let b = none.logprobs(&model, &all, eos, true).unwrap();
    assert!(none.is_empty());
    assert_eq!(none.bytes(), 0);
    assert_eq!(a, b);
    let want = full(&model, &eps, eos, true);
    for (g, w) in a.iter().zip(&want) {
        for (x, y) in g.iter().zip(w) {
            assert!((x - y).abs() <= 1e-5);
        }
    }
}

#[test]
fn an_episode_outside_the_vocabulary_is_an_error() {
    let model = gpt2_tiny();
    let mut eps = episodes(&model, 7, 3, 2, 5);
    eps[1].prompt[0] = model.vocab_size() as u32 + 3;
    let all: Vec<&Episode> = eps.iter().collect();
    let e = RefCache::default()
        .logprobs(&model, &all, 7, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("episode 1"), "{e}");
}
