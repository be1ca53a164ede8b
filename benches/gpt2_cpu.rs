//! Training-step throughput of the CPU backend: forward + backward of GPT-2 small (random init) on
//! a batch of 4 x 64 tokens, with the full-vocabulary head and the loss at every position, as in
//! PyTorch's usual language-model step. Reported as tokens per second (criterion "elements").
//! Also batched sampling with the KV cache (batch 50, prompts of 20 tokens, 10 new tokens),
//! reported as new tokens per second, the counterpart of `scripts/peer_cpu.py --generate`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgsrm::batch::Batch;
use pgsrm::cpu::gpt2::{Gpt2Activations, backward_into, forward_into, lm_loss_into};
use pgsrm::cpu::gpt2_decode::generate;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config, Gpt2Weights};
use pgsrm::rng::Rng;
use pgsrm::sample::SamplingParams;
use std::hint::black_box;

fn train_step(c: &mut Criterion) {
    // As `pgsrm` itself runs (its `main` sets this first).
    pgsrm::keep_freed_memory();
    let cfg = Gpt2Config::named("small").expect("named config");
    let model = Gpt2::random(cfg.clone(), 0);
    let (b, t, v) = (4, 64, cfg.vocab_size);
    let mut rng = Rng::new(1);
    // Inputs and targets as a language-model step draws them: targets are the inputs shifted by one.
    let stream: Vec<Vec<u32>> = (0..b)
        .map(|_| (0..=t).map(|_| rng.below(v) as u32).collect())
        .collect();
    let inputs: Vec<Vec<u32>> = stream.iter().map(|s| s[..t].to_vec()).collect();
    let targets: Vec<u32> = stream.iter().flat_map(|s| s[1..].to_vec()).collect();
    let batch = Batch::left_padded(&inputs, cfg.eos_token_id).expect("batch");
    let positions = batch.real_positions();
    let mut acts = Gpt2Activations::new();
    let mut grads = Gpt2Weights::zeros(&cfg);
    let mut dlogits = Vec::new();

    let mut group = c.benchmark_group("gpt2_cpu");
    group.throughput(Throughput::Elements((b * t) as u64));
    group.sample_size(10);
    group.bench_function("small_b4_t64_forward_backward", |bench| {
        bench.iter(|| {
            forward_into(&model, &batch, &positions, &mut acts).expect("forward");
            let loss = lm_loss_into(&acts.logits, &targets, v, &mut dlogits);
            for (_, g) in grads.named_mut() {
                g.data.fill(0.0);
            }
            backward_into(&model, &mut acts, &dlogits, &mut grads);
            black_box(loss)
        })
    });
    group.finish();
}

fn sampling(c: &mut Criterion) {
    let cfg = Gpt2Config::named("small").expect("named config");
    let model = Gpt2::random(cfg.clone(), 0);
    let (b, prompt, new) = (50, 20, 10);
    let mut rng = Rng::new(2);
    let prompts: Vec<Vec<u32>> = (0..b)
        .map(|_| {
            (0..prompt)
                .map(|_| rng.below(cfg.vocab_size) as u32)
                .collect()
        })
        .collect();
    let params = SamplingParams {
        max_new_tokens: new,
        ..SamplingParams::default()
    };
    // The random model is near uniform over 50257 ids: a row stops early at end-of-text about
    // once in 5000 tokens, too rarely to move the figure.
    let eos = cfg.eos_token_id;
    let mut group = c.benchmark_group("gpt2_cpu");
    group.throughput(Throughput::Elements((b * new) as u64));
    group.sample_size(10);
    group.bench_function("small_generate_b50_p20_n10", |bench| {
        bench.iter(|| {
            let out = generate(&model, &prompts, &params, eos, &mut rng).expect("generate");
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, train_step, sampling);
criterion_main!(benches);
