//! A child of either family run on the CPU: its logits at chosen positions, and sampling.

use crate::batch::Batch;
use crate::model::spec::Model;
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams};
use crate::tensor::Tensor;
use anyhow::Result;

/// The logits (M, V) at the chosen (row, position) pairs of a left-padded batch.
pub fn logits(model: &Model, batch: &Batch, positions: &[(usize, usize)]) -> Result<Tensor> {
    Ok(match model {
        Model::Gpt2(m) => crate::cpu::gpt2::forward(m, batch, positions)?.0,
        Model::Llama(m) => crate::cpu::llama::forward(m, batch, positions)?.0,
    })
}

/// Samples continuations of every prompt together (KV cache).
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Result<Vec<Generation>> {
    match model {
        Model::Gpt2(m) => crate::cpu::decode::generate(m, prompts, params, eos, rng),
        Model::Llama(m) => crate::cpu::llama::generate(m, prompts, params, eos, rng),
    }
}
