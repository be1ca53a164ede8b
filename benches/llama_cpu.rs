//! SmolLM2-135M forward + backward on the CPU, batch 4 x 64 tokens, logits at every position
//! (a language-modelling step). The weights are a seeded random init of SmolLM2's config: speed
//! does not depend on their values, and the bench needs no download.
//! Peer: `scripts/peer_cpu.py --model smollm2` runs the same step in PyTorch eager fp32.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgsrm::batch::Batch;
use pgsrm::cpu::llama::{backward, forward, log_softmax};
use pgsrm::model::llama::{Llama, LlamaConfig};
use pgsrm::rng::Rng;
use std::time::Duration;

use pgsrm::model::llama::SMOLLM2_135M_CONFIG as SMOLLM2_135M;

fn step(m: &Llama, batch: &Batch, positions: &[(usize, usize)]) -> f32 {
    let v = m.config.vocab_size;
    let (logits, mut acts) = forward(m, batch, positions).unwrap();
    let mut logits = logits.data;
    let n = positions.len() as f32;
    let mut loss = 0.0;
    for (i, row) in logits.chunks_exact_mut(v).enumerate() {
        let target = batch.tokens[(i + 1) % batch.tokens.len()] as usize;
        let lp = log_softmax(row);
        loss -= lp[target] / n;
        for (d, l) in row.iter_mut().zip(&lp) {
            *d = l.exp() / n;
        }
        row[target] -= 1.0 / n;
    }
    let g = backward(m, &mut acts, &logits);
    std::hint::black_box(&g);
    loss
}

fn bench(c: &mut Criterion) {
    // As `pgsrm` itself runs (its `main` sets this first).
    pgsrm::keep_freed_memory();
    let cfg = LlamaConfig::from_json_str(SMOLLM2_135M).unwrap();
    let m = Llama::random(cfg, 1);
    let (b, t) = (4, 64);
    let mut rng = Rng::new(2);
    let seqs: Vec<Vec<u32>> = (0..b)
        .map(|_| (0..t).map(|_| rng.below(49152) as u32).collect())
        .collect();
    let batch = Batch::left_padded(&seqs, 0).unwrap();
    let positions = batch.real_positions();
    let mut g = c.benchmark_group("llama_cpu");
    g.throughput(Throughput::Elements((b * t) as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("smollm2_135m_fwd_bwd_b4_t64", |bn| {
        bn.iter(|| step(&m, &batch, &positions))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
