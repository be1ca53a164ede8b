//! PPO throughput of the CPU backend: whole trainer updates (batched sampling, parent table,
//! binary reward, the policy update with the frozen reference and the value head, both AdamW
//! steps) of GPT-2 `small` (random init) and of SmolLM2-135M-Instruct (the `smollm2-135m-instruct`
//! asset, fetched when missing) on the colors task: batch 50, prompts of
//! about 20 tokens, 2 new tokens. The binary reward needs no embedder, so the figure measures
//! the policy work. Reported as episodes per second (criterion "elements").

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgsrm::cpu::policy::hidden_size;
use pgsrm::model::spec::{Loaded, load_model};
use pgsrm::ppo::{Critic, PpoConfig, Trainer};
use pgsrm::tasks;
use std::time::Duration;

fn trainer(loaded: Loaded) -> Trainer {
    let reference = loaded.model.clone();
    let critic = Critic::new(hidden_size(&loaded.model), 0);
    let task = tasks::by_name("colors").expect("colors task");
    let parent = Box::new(task.table_parent());
    let cfg = PpoConfig {
        shaping: "binary".into(),
        batch_size: Some(50),
        max_new_tokens: Some(2),
        ..PpoConfig::default()
    };
    Trainer::new(cfg, loaded, reference, critic, task, None, parent, 1).expect("trainer")
}

fn ppo_update(c: &mut Criterion) {
    let loaded = load_model("random:small").expect("GPT-2 small random init and its tokenizer");
    let mut gpt2 = trainer(loaded);
    let mut group = c.benchmark_group("ppo_cpu");
    group.throughput(Throughput::Elements(gpt2.batch_size() as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(60));
    group.bench_function("gpt2_small_b50_colors_binary_update", |bench| {
        bench.iter(|| gpt2.update().expect("update"));
    });
    drop(gpt2);
    let loaded = load_model("smollm2-135m-instruct")
        .unwrap_or_else(|e| panic!("SmolLM2-135M-Instruct (fetched by the asset code): {e:#}"));
    let mut smol = trainer(loaded);
    group.bench_function("smollm2_135m_b50_colors_binary_update", |bench| {
        bench.iter(|| smol.update().expect("update"));
    });
    group.finish();
}

criterion_group!(benches, ppo_update);
criterion_main!(benches);
