//! PPO throughput of the CPU backend: whole trainer updates (batched sampling, parent table,
//! binary reward, the policy update with the frozen reference and the value head, both AdamW
//! steps) of GPT-2 `small` (random init) on the colors task: batch 50, prompts of about 20
//! tokens, 2 new tokens. The binary reward needs no embedder, so the figure measures the policy
//! work. Reported as episodes per second (criterion "elements").

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgsrm::cpu::policy::hidden_size;
use pgsrm::model::spec::load_model;
use pgsrm::ppo::{Critic, PpoConfig, Trainer};
use pgsrm::tasks;
use std::time::Duration;

fn ppo_update(c: &mut Criterion) {
    let loaded = load_model("random:small").expect("GPT-2 small random init and its tokenizer");
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
    let mut trainer =
        Trainer::new(cfg, loaded, reference, critic, task, None, parent, 1).expect("trainer");
    let mut group = c.benchmark_group("ppo_cpu");
    group.throughput(Throughput::Elements(trainer.batch_size() as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(60));
    group.bench_function("gpt2_small_b50_colors_binary_update", |bench| {
        bench.iter(|| trainer.update().expect("update"));
    });
    group.finish();
}

criterion_group!(benches, ppo_update);
criterion_main!(benches);
