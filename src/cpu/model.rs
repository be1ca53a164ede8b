//! A child of either family run on the CPU: the one place the CPU backend tells GPT-2 from Llama
//! (as `cuda::model::DevModel` does on a device). Its logits at chosen positions, sampling, the
//! training forward and backward with their activations and gradients, and rollouts whose forward
//! pass the update reuses.

use crate::batch::Batch;
use crate::cpu::gpt2::{self, Gpt2Activations};
use crate::cpu::llama::{self, LlamaActivations};
use crate::cpu::rollout::{Rollout, generate_recorded};
use crate::model::gpt2::{Gpt2, Gpt2Weights};
use crate::model::llama::{Llama, LlamaWeights};
use crate::model::spec::Model;
use crate::ppo::loss::Episode;
use crate::rng::Rng;
use crate::sample::{Generation, Generator, SamplingParams};
use crate::tensor::Tensor;
use anyhow::{Result, bail};

/// The logits (M, V) at the chosen (row, position) pairs of a left-padded batch.
pub fn logits(model: &Model, batch: &Batch, positions: &[(usize, usize)]) -> Result<Tensor> {
    Ok(match model {
        Model::Gpt2(m) => gpt2::forward(m, batch, positions)?.0,
        Model::Llama(m) => llama::forward(m, batch, positions)?.0,
    })
}

/// Log-probabilities of `tokens` under `model` at `positions` of `batch` (no activations kept).
pub fn token_logprobs(
    model: &Model,
    batch: &Batch,
    positions: &[(usize, usize)],
    tokens: &[u32],
) -> Result<Vec<f32>> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let logits = logits(model, batch, positions)?;
    let v = model.vocab_size();
    Ok(tokens
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let row = &logits.data[i * v..(i + 1) * v];
            let max = row.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&z| (z as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            (row[a as usize] as f64 - lse) as f32
        })
        .collect())
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
        Model::Gpt2(m) => crate::cpu::gpt2_decode::generate(m, prompts, params, eos, rng),
        Model::Llama(m) => llama::generate(m, prompts, params, eos, rng),
    }
}

/// `generate`, keeping the rollout's forward pass (`KeptRollout`) for the update that follows.
pub fn generate_kept(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Result<KeptRollout> {
    let recorded = match model {
        Model::Gpt2(m) => {
            Recorded::Gpt2(Box::new(generate_recorded(m, prompts, params, eos, rng)?))
        }
        Model::Llama(m) => {
            Recorded::Llama(Box::new(generate_recorded(m, prompts, params, eos, rng)?))
        }
    };
    Ok(KeptRollout {
        prompts: prompts.to_vec(),
        recorded,
    })
}

/// A child on the CPU as a `Generator`, ending answers at `eos`.
pub struct CpuGenerator {
    pub model: Model,
    pub eos: u32,
}

impl Generator for CpuGenerator {
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
    ) -> Result<Vec<Generation>> {
        generate(&self.model, prompts, params, self.eos, rng)
    }
}

/// Every parameter tensor of a model, in `named()` order, to update.
pub fn params_mut(model: &mut Model) -> Vec<&mut Tensor> {
    match model {
        Model::Gpt2(m) => m.weights.named_mut().into_iter().map(|x| x.1).collect(),
        Model::Llama(m) => m.weights.named_mut().into_iter().map(|x| x.1).collect(),
    }
}

/// Gradients of every parameter of a child, in its weights' layout.
pub enum Grads {
    Gpt2(Gpt2Weights),
    Llama(LlamaWeights),
}

impl Grads {
    pub fn list(&self) -> Vec<&Tensor> {
        match self {
            Grads::Gpt2(g) => g.named().into_iter().map(|x| x.1).collect(),
            Grads::Llama(g) => g.named().into_iter().map(|x| x.1).collect(),
        }
    }

    pub fn list_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            Grads::Gpt2(g) => g.named_mut().into_iter().map(|x| x.1).collect(),
            Grads::Llama(g) => g.named_mut().into_iter().map(|x| x.1).collect(),
        }
    }
}

/// What a training forward keeps for backward.
pub enum Acts {
    Gpt2(Box<Gpt2Activations>),
    Llama(Box<LlamaActivations>),
}

/// The training forward: logits (M, V) at `positions` and the final hidden state of each row's
/// last index (B, C), with the activations backward needs.
pub fn train_forward(
    model: &Model,
    batch: &Batch,
    positions: &[(usize, usize)],
) -> Result<(Vec<f32>, Vec<f32>, Acts)> {
    let c = model.hidden_size();
    let mut last = Vec::with_capacity(batch.b * c);
    let (logits, acts) = match model {
        Model::Gpt2(m) => {
            let (logits, acts) = gpt2::forward(m, batch, positions)?;
            for r in 0..batch.b {
                last.extend_from_slice(acts.final_hidden(r, batch.t - 1));
            }
            (logits.data, Acts::Gpt2(Box::new(acts)))
        }
        Model::Llama(m) => {
            let (logits, acts) = llama::forward(m, batch, positions)?;
            for r in 0..batch.b {
                last.extend_from_slice(acts.final_hidden(r, batch.t - 1));
            }
            (logits.data, Acts::Llama(Box::new(acts)))
        }
    };
    Ok((logits, last, acts))
}

/// A rollout whose forward pass is kept for the update that follows, and the prompts it ran.
pub struct KeptRollout {
    prompts: Vec<Vec<u32>>,
    recorded: Recorded,
}

enum Recorded {
    Gpt2(Box<Rollout<Gpt2>>),
    Llama(Box<Rollout<Llama>>),
}

impl KeptRollout {
    pub fn generations(&self) -> &[Generation] {
        match &self.recorded {
            Recorded::Gpt2(r) => &r.generations,
            Recorded::Llama(r) => &r.generations,
        }
    }

    /// Whether `episodes` are exactly this rollout's prompts and continuations.
    pub fn matches(&self, episodes: &[Episode]) -> bool {
        let gens = self.generations();
        episodes.len() == self.prompts.len()
            && episodes
                .iter()
                .zip(&self.prompts)
                .zip(gens)
                .all(|((e, p), g)| e.prompt == *p && e.response == g.tokens)
    }

    /// `train_forward` of the scored batch of the rollout's episodes, from the kept pass.
    pub fn finish(self, model: &Model, kept: &[usize]) -> Result<(Vec<f32>, Vec<f32>, Acts)> {
        Ok(match (model, self.recorded) {
            (Model::Gpt2(m), Recorded::Gpt2(r)) => {
                let (logits, hidden, acts) = r.finish(m, kept)?;
                (logits, hidden, Acts::Gpt2(Box::new(acts)))
            }
            (Model::Llama(m), Recorded::Llama(r)) => {
                let (logits, hidden, acts) = r.finish(m, kept)?;
                (logits, hidden, Acts::Llama(Box::new(acts)))
            }
            _ => bail!("the kept rollout is of another model family"),
        })
    }
}

/// Gradients of every parameter, written into `reuse` (zeroed first) when given: the buffer is
/// as large as the model, and a fresh one costs a page fault per 4 KiB on every update.
pub fn backward(model: &Model, acts: &mut Acts, dlogits: &[f32], reuse: Option<Grads>) -> Grads {
    let mut grads = match reuse {
        Some(mut g) => {
            for t in g.list_mut() {
                t.data.fill(0.0);
            }
            g
        }
        None => match model {
            Model::Gpt2(m) => Grads::Gpt2(Gpt2Weights::zeros(&m.config)),
            Model::Llama(m) => Grads::Llama(LlamaWeights::zeros(&m.config)),
        },
    };
    match (model, acts, &mut grads) {
        (Model::Gpt2(m), Acts::Gpt2(a), Grads::Gpt2(g)) => gpt2::backward_into(m, a, dlogits, g),
        (Model::Llama(m), Acts::Llama(a), Grads::Llama(g)) => {
            llama::backward_into(m, a, dlogits, g)
        }
        _ => unreachable!("activations and gradients come from the same model"),
    }
    grads
}
