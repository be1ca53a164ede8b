//! PPO throughput of each backend, one criterion group per device: `ppo_cpu` always, `ppo_cuda`
//! when a CUDA device is present (never the emulated device, whose speed means nothing). Each
//! measures whole trainer updates (batched sampling, parent table,
//! binary reward, the policy update with the frozen reference and the value head, both AdamW
//! steps) of GPT-2 `small` (random init) and of SmolLM2-135M-Instruct (the `smollm2-135m-instruct`
//! asset, fetched when missing) on the colors task, 2 new tokens, in two shapes:
//! - the paper's: batch 50, raw prompts of about 20 tokens;
//! - the SmolLM2 fallback's (`pgsrm train` without GPT-2 weights): batch 8, prompts written as a
//!   user turn of SmolLM2's chat template, about 55 tokens of which about 40 (the system turn and
//!   the task's instruction) are the same in every prompt. GPT-2 has no chat template of its own,
//!   so its prompts are the same ChatML text, tokenized by GPT-2's tokenizer.
//!
//! The binary reward needs no embedder, so the figures measure the policy work. Reported as
//! episodes per second (criterion "elements").
//!
//! `PGSRM_BENCH_SMOLLM2` names another model (anything `--model` takes) to stand in for
//! SmolLM2-135M-Instruct: scripts/gpu-check.sh gives a folder of its shape, tokenizer and chat
//! template with random weights on a GPU machine the GGUF cannot be carried to (speed does not
//! depend on the weights' values). The groups' times are the defaults of the `Criterion` below,
//! so command-line flags (`--measurement-time 5`) override them.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::model::spec::{Loaded, load_model};
use pgsrm::ppo::{PpoConfig, Trainer};
use pgsrm::run::train::trainer_on;
use pgsrm::tasks;
use std::time::Duration;

/// The paper's shape: batch 50, raw prompts.
fn paper_shape() -> PpoConfig {
    PpoConfig {
        shaping: "binary".into(),
        batch_size: Some(50),
        max_new_tokens: Some(2),
        ..PpoConfig::default()
    }
}

/// The fallback's shape: batch 8, chat prompts.
fn fallback_shape() -> PpoConfig {
    PpoConfig {
        batch_size: Some(8),
        chat: true,
        ..paper_shape()
    }
}

/// A trainer of `loaded` on `device` (`cpu` or `cuda`).
fn trainer(device: &str, loaded: Loaded, cfg: PpoConfig) -> Trainer {
    let task = tasks::by_name("colors").expect("colors task");
    let device = if device == "cuda" {
        Device::open(DeviceChoice::Cuda, 0).expect("CUDA device 0")
    } else {
        Device::Cpu
    };
    trainer_on(&device, cfg, loaded, task, None, 1).expect("trainer")
}

/// SmolLM2-135M-Instruct (fetched by the asset code), or what `PGSRM_BENCH_SMOLLM2` names.
fn smollm2() -> Loaded {
    match std::env::var("PGSRM_BENCH_SMOLLM2") {
        Ok(m) if !m.is_empty() => load_model(&m)
            .unwrap_or_else(|e| panic!("PGSRM_BENCH_SMOLLM2={m} (SmolLM2's stand-in): {e:#}")),
        _ => load_model("smollm2-135m-instruct")
            .unwrap_or_else(|e| panic!("SmolLM2-135M-Instruct (fetched by the asset code): {e:#}")),
    }
}

/// GPT-2 small (random init) with SmolLM2's chat template, for the fallback's prompt shape.
fn gpt2_small(chat_template: Option<String>) -> Loaded {
    let mut loaded = load_model("random:small").expect("GPT-2 small random init and its tokenizer");
    loaded.chat_template = chat_template;
    loaded
}

fn ppo_update(c: &mut Criterion) {
    // As `pgsrm` itself runs (its `main` sets this first).
    pgsrm::keep_freed_memory();
    let template = smollm2().chat_template;
    assert!(template.is_some(), "SmolLM2 has a chat template");
    let mut devices = vec!["cpu"];
    if pgsrm::cuda::device_count() > 0 {
        devices.push("cuda");
    }
    let shapes = [
        ("b50_colors", paper_shape()),
        ("b8_chat_colors", fallback_shape()),
    ];
    for device in devices {
        let mut group = c.benchmark_group(format!("ppo_{device}"));
        for (shape, cfg) in &shapes {
            let mut t = trainer(device, gpt2_small(template.clone()), cfg.clone());
            group.throughput(Throughput::Elements(t.batch_size() as u64));
            group.bench_function(format!("gpt2_small_{shape}_binary_update"), |bench| {
                bench.iter(|| t.update().expect("update"));
            });
        }
        for (shape, cfg) in &shapes {
            let mut t = trainer(device, smollm2(), cfg.clone());
            group.throughput(Throughput::Elements(t.batch_size() as u64));
            group.bench_function(format!("smollm2_135m_{shape}_binary_update"), |bench| {
                bench.iter(|| t.update().expect("update"));
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Here rather than on the groups, where they would override the command line's.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(60));
    targets = ppo_update
}
criterion_main!(benches);
