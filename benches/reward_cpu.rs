//! Reward throughput on the CPU for batches of 50 short answers (1-3 words), the peer being
//! scripts/peer_reward.py (sentence-transformers on the same answers):
//! - minilm_embed: all-MiniLM-L6-v2 vectors of 50 answers (one `embed` call), every answer
//!   through the encoder (repeats included), as in the peer;
//! - minilm_reward: the whole PGSRM reward of 50 (parent, child) pairs: both sides embedded in one
//!   call of 100 texts, cosine per pair, ((cos + 1) / 2)^4;
//! - minilm_reward_every_text: the same with the embedder's merging of repeated texts switched
//!   off, so every one of the 100 texts goes through the encoder as it does in the peer;
//! - static_reward: the same reward with the static word-piece mean embedder.
//!
//! Throughput is reported per answer (embed) or per reward (reward).
//!
//! `cargo bench --bench reward_cpu`; the MiniLM folder comes through the asset code.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::{MINILM_ASSET, SentenceEncoder, StaticMean};
use pgsrm::reward::shaping::{cosine, pgsrm};
use pgsrm::rng::Rng;
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 50;

// The same answer list as scripts/peer_reward.py: colors, opposites, categories, fragments.
const ANSWERS: &[&str] = &[
    "purple",
    "green",
    "dark brown",
    "light pink",
    "orange",
    "grey",
    "blue",
    "red",
    "white",
    "black",
    "cold",
    "small",
    "very quiet",
    "slow",
    "sad",
    "dark",
    "soft",
    "empty",
    "old",
    "short",
    "fruit",
    "a vegetable",
    "animal",
    "tool",
    "furniture",
    "musical instrument",
    "vehicle",
    "bird",
    "kitchen utensil",
    "clothing",
    "the sea",
    "a loud dog",
    "rain today",
    "my old house",
    "not sure",
    "yes",
    "no",
    "maybe later",
    "the answer",
    "1",
    "42",
    "purple purple",
    "'purple",
    "red and blue",
    "bright yellow",
    "deep sea blue",
    "it is cold",
    "tiny",
    "hot",
    "sweet",
    "bitter taste",
    "a pear",
    "an apple",
    "banana",
    "tomato",
    "carrot",
    "hammer",
    "chair",
    "violin",
    "bus",
    "sparrow",
    "spoon",
    "jacket",
    "sunny day",
    "grey clouds",
    "happy",
    "lonely",
    "tired",
];

/// Parents then children of one batch, as one slice of 2 x BATCH texts.
fn draw_batches(n: usize) -> Vec<Vec<&'static str>> {
    let mut rng = Rng::new(0);
    (0..n)
        .map(|_| {
            (0..2 * BATCH)
                .map(|_| ANSWERS[rng.below(ANSWERS.len())])
                .collect()
        })
        .collect()
}

fn rewards(e: &dyn Embedder, pair_texts: &[&str]) -> Vec<f32> {
    let v = e.embed(pair_texts).unwrap();
    let (parents, children) = v.split_at(BATCH);
    parents
        .iter()
        .zip(children)
        .map(|(p, c)| pgsrm(cosine(p, c), 4.0))
        .collect()
}

fn reward_cpu(c: &mut Criterion) {
    let dir = pgsrm::assets::resolve_dir(MINILM_ASSET).expect("all-MiniLM-L6-v2");
    let minilm = SentenceEncoder::load(&dir, "minilm").unwrap();
    let minilm_every = SentenceEncoder::load(&dir, "minilm")
        .unwrap()
        .with_dedup(false);
    let stat = StaticMean::load(&dir, "static").unwrap();
    let batches = draw_batches(16);

    let mut g = c.benchmark_group("reward_cpu");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Elements(BATCH as u64));

    g.bench_function("minilm_embed", |b| {
        let mut i = 0;
        b.iter(|| {
            let children = &batches[i % batches.len()][BATCH..];
            i += 1;
            black_box(minilm_every.embed(children).unwrap())
        })
    });
    g.bench_function("minilm_reward", |b| {
        let mut i = 0;
        b.iter(|| {
            let texts = &batches[i % batches.len()];
            i += 1;
            black_box(rewards(&minilm, texts))
        })
    });
    g.bench_function("minilm_reward_every_text", |b| {
        let mut i = 0;
        b.iter(|| {
            let texts = &batches[i % batches.len()];
            i += 1;
            black_box(rewards(&minilm_every, texts))
        })
    });
    g.bench_function("static_reward", |b| {
        let mut i = 0;
        b.iter(|| {
            let texts = &batches[i % batches.len()];
            i += 1;
            black_box(rewards(&stat, texts))
        })
    });
    g.finish();
}

criterion_group!(benches, reward_cpu);
criterion_main!(benches);
