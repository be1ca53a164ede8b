//! Reward throughput for batches of 50 short answers (1-3 words), one group per device: on the
//! CPU (`reward_cpu`), the peer being scripts/peer_reward.py (sentence-transformers on the same
//! answers):
//! - minilm_embed: all-MiniLM-L6-v2 vectors of 50 answers (one `embed` call), every answer
//!   through the encoder (repeats included), as in the peer;
//! - minilm_reward: the whole PGSRM reward of 50 (parent, child) pairs: both sides embedded in one
//!   call of 100 texts, cosine per pair, ((cos + 1) / 2)^4;
//! - minilm_reward_every_text: the same with the embedder's merging of repeated texts switched
//!   off, so every one of the 100 texts goes through the encoder as it does in the peer;
//! - static_reward: the same reward with the static word-piece mean embedder.
//!
//!
//! On a CUDA device (`reward_cuda`, when there is one; never the emulated device, which is a
//! correctness tool and no speed figure):
//! - minilm_embed: as on the CPU, the encoder on the device;
//! - minilm_reward: the reward through `shaping::rewards` and the device's `shaped_rewards`:
//!   each distinct child encoded and shaped in one pass, the parents' vectors from the cache
//!   (warm after the first call, as on every update after the first in a run);
//! - minilm_reward_uncached: the same with the cache switched off, the parents encoded every call.
//!
//! Throughput is reported per answer (embed) or per reward (reward).
//!
//! `cargo bench --bench reward -- reward_cpu` for the CPU group, `-- reward_cuda` for the device
//! group; the MiniLM folder comes through the asset code. The groups' times are the defaults of
//! the `Criterion` below, so command-line flags (`--measurement-time 5`) override them.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use pgsrm::cpu::bert::CpuEncoder;
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::{MINILM_ASSET, SentenceEncoder, StaticMean};
use pgsrm::reward::shaping::{self, Shaping, cosine, pgsrm};
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

/// The pair texts of a batch through `shaping::rewards`, as training computes them.
fn shaped(e: &dyn Embedder, pair_texts: &[&str]) -> Vec<f32> {
    let (parents, children) = pair_texts.split_at(BATCH);
    shaping::rewards(Some(e), Shaping::Pgsrm, 4.0, parents, children).unwrap()
}

fn reward(c: &mut Criterion) {
    // As `pgsrm` itself runs (its `main` sets this first).
    pgsrm::keep_freed_memory();
    reward_cpu(c);
    if pgsrm::cuda::device_count() > 0 {
        reward_cuda(c);
    }
}

/// A group of `c` named `name`, set up as every group of this bench.
fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(BATCH as u64));
    g
}

/// Times `f` on one batch after another: `f` gets a batch's pair texts (parents, then
/// children), or with `children_only` its children.
fn over_batches<R>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    batches: &[Vec<&'static str>],
    children_only: bool,
    f: impl Fn(&[&str]) -> R,
) {
    g.bench_function(id, |b| {
        let mut i = 0;
        b.iter(|| {
            let texts = &batches[i % batches.len()];
            i += 1;
            black_box(f(if children_only {
                &texts[BATCH..]
            } else {
                texts
            }))
        })
    });
}

fn reward_cpu(c: &mut Criterion) {
    let dir = pgsrm::assets::resolve_dir(MINILM_ASSET).expect("all-MiniLM-L6-v2");
    let minilm = SentenceEncoder::load(&dir, "minilm", &CpuEncoder).unwrap();
    let minilm_every = SentenceEncoder::load(&dir, "minilm", &CpuEncoder)
        .unwrap()
        .with_dedup(false);
    let stat = StaticMean::load(&dir, "static").unwrap();
    let batches = draw_batches(16);
    let mut g = group(c, "reward_cpu");
    over_batches(&mut g, "minilm_embed", &batches, true, |t| {
        minilm_every.embed(t).unwrap()
    });
    over_batches(&mut g, "minilm_reward", &batches, false, |t| {
        rewards(&minilm, t)
    });
    over_batches(&mut g, "minilm_reward_every_text", &batches, false, |t| {
        rewards(&minilm_every, t)
    });
    over_batches(&mut g, "static_reward", &batches, false, |t| {
        rewards(&stat, t)
    });
    g.finish();
}

fn reward_cuda(c: &mut Criterion) {
    let dir = pgsrm::assets::resolve_dir(MINILM_ASSET).expect("all-MiniLM-L6-v2");
    let device = Device::open(DeviceChoice::Cuda, 0).expect("CUDA device 0");
    let load = || SentenceEncoder::load(&dir, "minilm", device.encoders().as_ref()).unwrap();
    let minilm_every = load().with_dedup(false);
    let minilm = load();
    let minilm_uncached = load().with_parent_cache(0);
    let batches = draw_batches(16);
    let mut g = group(c, "reward_cuda");
    over_batches(&mut g, "minilm_embed", &batches, true, |t| {
        minilm_every.embed(t).unwrap()
    });
    over_batches(&mut g, "minilm_reward", &batches, false, |t| {
        shaped(&minilm, t)
    });
    over_batches(&mut g, "minilm_reward_uncached", &batches, false, |t| {
        shaped(&minilm_uncached, t)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Here rather than on the groups, where they would override the command line's.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    targets = reward
}
criterion_main!(benches);
