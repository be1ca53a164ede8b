//! A child model of either family on the device, as `cuda::policy` drives it: upload and
//! download, its parameter and gradient lists in `named()` order, the training forward that keeps
//! activations, its backward, and decoding.

pub mod bert;
pub mod decode;
pub mod generate;
pub mod gpt2;
pub mod gpt2_decode;
pub mod gpt2_train;
pub mod llama;
pub mod llama_decode;
pub mod llama_train;
pub mod train_batch;

use crate::batch::Batch;
use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::decode::logits_at_every_position;
use crate::cuda::model::generate::{DecodeCache, Draws, Lent, generate_on, generate_recorded};
use crate::cuda::model::gpt2::{GpuGpt2, GpuGpt2Weights};
use crate::cuda::model::llama::{GpuLlama, GpuLlamaWeights};
use crate::cuda::model::train_batch::TrainBatch;
use crate::cuda::ops::optim::{TensorList, grad_zero};
use crate::model::spec::Model;
use crate::rng::Rng;
use crate::sample::{Generation, Generator, SamplingParams};
use anyhow::{Result, bail};
use gpt2_train::Gpt2Activations;
use llama_train::LlamaActivations;
use std::sync::Arc;

type Buf = DevBuf<f32>;

pub enum DevModel {
    Gpt2(GpuGpt2),
    Llama(GpuLlama),
}

/// Gradients of every parameter of a `DevModel`, in the same layout.
pub enum DevGrads {
    Gpt2(GpuGpt2Weights),
    Llama(GpuLlamaWeights),
}

/// What a training forward keeps for backward.
pub enum DevActs {
    Gpt2(Box<Gpt2Activations>),
    Llama(Box<LlamaActivations>),
}

impl DevActs {
    /// (M, V) logits of the batch's chosen rows.
    pub fn logits(&self) -> &Buf {
        match self {
            DevActs::Gpt2(a) => &a.logits,
            DevActs::Llama(a) => &a.logits,
        }
    }

    /// (N, C) final hidden states, where the value head reads.
    pub fn final_hidden(&self) -> &Buf {
        match self {
            DevActs::Gpt2(a) => a.final_hidden(),
            DevActs::Llama(a) => a.final_hidden(),
        }
    }
}

/// A rollout recorded on the device for the update that follows it
/// (`generate::generate_recorded`): training's activations of its batch, and what else it lends.
pub struct DevRollout {
    pub acts: DevActs,
    pub lent: Lent,
}

impl DevGrads {
    pub fn list(&self) -> Vec<&Buf> {
        match self {
            DevGrads::Gpt2(w) => w.list(),
            DevGrads::Llama(w) => w.list(),
        }
    }

    /// Zeroes every gradient, in one launch (`list` keeps their list): a step adds into them.
    pub fn zero(&mut self, g: &Gpu, list: &mut Option<TensorList>) -> Result<()> {
        let mut tensors = match self {
            DevGrads::Gpt2(w) => w.list_mut(),
            DevGrads::Llama(w) => w.list_mut(),
        };
        grad_zero(g, &mut tensors, list)
    }
}

impl DevModel {
    pub fn upload(g: &Gpu, model: &Model) -> Result<Self> {
        Ok(match model {
            Model::Gpt2(m) => DevModel::Gpt2(GpuGpt2::upload(g, m)?),
            Model::Llama(m) => DevModel::Llama(GpuLlama::upload(g, m)?),
        })
    }

    /// `like` (the same family and config) with this model's weights copied down.
    pub fn download(&self, g: &Gpu, like: &Model) -> Result<Model> {
        let mut out = like.clone();
        match (self, &mut out) {
            (DevModel::Gpt2(d), Model::Gpt2(m)) => m.weights = d.weights.download(g, &d.config)?,
            (DevModel::Llama(d), Model::Llama(m)) => {
                m.weights = d.weights.download(g, &d.config)?
            }
            _ => bail!("the host model is of another family than the device's"),
        }
        Ok(out)
    }

    /// Every parameter in `named()` order.
    pub fn params(&self) -> Vec<&Buf> {
        match self {
            DevModel::Gpt2(m) => m.weights.list(),
            DevModel::Llama(m) => m.weights.list(),
        }
    }

    pub fn params_mut(&mut self) -> Vec<&mut Buf> {
        match self {
            DevModel::Gpt2(m) => m.weights.list_mut(),
            DevModel::Llama(m) => m.weights.list_mut(),
        }
    }

    pub fn zero_grads(&self, g: &Gpu) -> Result<DevGrads> {
        Ok(match self {
            DevModel::Gpt2(m) => DevGrads::Gpt2(GpuGpt2Weights::zeros(g, &m.config)?),
            DevModel::Llama(m) => DevGrads::Llama(GpuLlamaWeights::zeros(g, &m.config)?),
        })
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            DevModel::Gpt2(m) => m.config.vocab_size,
            DevModel::Llama(m) => m.config.vocab_size,
        }
    }

    /// Positions the model can attend over.
    pub fn context(&self) -> usize {
        match self {
            DevModel::Gpt2(m) => m.config.n_positions,
            DevModel::Llama(m) => m.config.max_position_embeddings,
        }
    }

    /// `batch` on the device with logits wanted at `positions`, in `reuse`'s buffers where they
    /// are long enough.
    pub fn train_batch(
        &self,
        g: &Gpu,
        batch: &Batch,
        positions: &[(usize, usize)],
        reuse: Option<TrainBatch>,
    ) -> Result<TrainBatch> {
        TrainBatch::new(
            g,
            batch,
            positions,
            self.vocab_size(),
            self.context(),
            reuse,
        )
    }

    /// The training forward on `batch`: logits of its chosen rows, final hidden states and what
    /// backward needs; in `reuse`'s buffers when they were made for the batch's shape.
    pub fn forward(&self, g: &Gpu, batch: &TrainBatch, reuse: Option<DevActs>) -> Result<DevActs> {
        let (b, t, m) = (batch.b, batch.t, batch.m);
        Ok(match (self, reuse) {
            (DevModel::Gpt2(d), reuse) => {
                let mut acts = match reuse {
                    Some(DevActs::Gpt2(mut a)) if a.fits(b, t, m) => {
                        a.set_rows(m)?;
                        a
                    }
                    _ => Box::new(Gpt2Activations::new(g, &d.config, b, t, m)?),
                };
                gpt2_train::forward(g, d, batch, &mut acts)?;
                DevActs::Gpt2(acts)
            }
            (DevModel::Llama(d), reuse) => {
                let mut acts = match reuse {
                    Some(DevActs::Llama(mut a)) if a.fits(b, t, m) => {
                        a.set_rows(m)?;
                        a
                    }
                    _ => Box::new(LlamaActivations::new(g, &d.config, b, t, m)?),
                };
                llama_train::forward(g, d, batch, &mut acts)?;
                DevActs::Llama(acts)
            }
        })
    }

    /// Adds every parameter's gradient for dlogits (M, V) of the last `forward` into `grads`.
    pub fn backward(
        &self,
        g: &Gpu,
        batch: &TrainBatch,
        acts: &mut DevActs,
        dlogits: &Buf,
        grads: &mut DevGrads,
    ) -> Result<()> {
        match (self, acts, grads) {
            (DevModel::Gpt2(d), DevActs::Gpt2(a), DevGrads::Gpt2(w)) => {
                gpt2_train::backward(g, d, batch, a, dlogits, w)
            }
            (DevModel::Llama(d), DevActs::Llama(a), DevGrads::Llama(w)) => {
                llama_train::backward(g, d, batch, a, dlogits, w)
            }
            _ => bail!("activations and gradients of another model family"),
        }
    }

    /// `decode::logits_at_every_position` on this model.
    pub fn logits_at_every_position(&self, g: &Gpu, seq: &[u32]) -> Result<Vec<f32>> {
        match self {
            DevModel::Gpt2(m) => logits_at_every_position(g, m, seq),
            DevModel::Llama(m) => logits_at_every_position(g, m, seq),
        }
    }

    /// `generate::generate_recorded` on this model, with `cache` kept for these weights.
    pub fn generate_recorded(
        &self,
        g: &Gpu,
        cache: &mut DecodeCache,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        eos: u32,
        draws: Draws,
    ) -> Result<DevRollout> {
        Ok(match self {
            DevModel::Gpt2(m) => {
                let r = generate_recorded(g, m, cache, prompts, params, eos, draws)?;
                DevRollout {
                    acts: DevActs::Gpt2(r.acts),
                    lent: r.lent,
                }
            }
            DevModel::Llama(m) => {
                let r = generate_recorded(g, m, cache, prompts, params, eos, draws)?;
                DevRollout {
                    acts: DevActs::Llama(r.acts),
                    lent: r.lent,
                }
            }
        })
    }

    /// The activations of `rollout` made ready for `backward` on `batch`, its own batch with
    /// logits wanted at rows `logit_rows` (M) of the rollout's (S B, V) logits.
    pub fn finish_recorded(
        &self,
        g: &Gpu,
        batch: &TrainBatch,
        rollout: &mut DevRollout,
        logit_rows: &DevBuf<i32>,
    ) -> Result<()> {
        let logits = rollout.lent.logits();
        match (self, &mut rollout.acts) {
            (DevModel::Gpt2(d), DevActs::Gpt2(a)) => {
                gpt2_train::finish_recorded(g, d, batch, a, logits, logit_rows)
            }
            (DevModel::Llama(d), DevActs::Llama(a)) => {
                llama_train::finish_recorded(g, d, batch, a, logits, logit_rows)
            }
            _ => bail!("a rollout recorded by a model of another family"),
        }
    }

    /// Gives a recorded rollout's buffers back to `cache` once its update is done with them.
    pub fn give_back(&self, cache: &mut DecodeCache, rollout: DevRollout) {
        match (self, rollout.acts) {
            (DevModel::Gpt2(_), DevActs::Gpt2(a)) => cache.give_back::<GpuGpt2>(a, rollout.lent),
            (DevModel::Llama(_), DevActs::Llama(a)) => cache.give_back::<GpuLlama>(a, rollout.lent),
            _ => {}
        }
    }

    /// `generate::generate_on` on this model, with `cache` kept for these weights.
    pub fn generate(
        &self,
        g: &Gpu,
        cache: &mut DecodeCache,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        eos: u32,
        draws: Draws,
    ) -> Result<Vec<Generation>> {
        match self {
            DevModel::Gpt2(m) => generate_on(g, m, cache, prompts, params, eos, draws),
            DevModel::Llama(m) => generate_on(g, m, cache, prompts, params, eos, draws),
        }
    }
}

/// A child on a device as a `Generator`, ending answers at `eos`; the host's generator draws the
/// uniforms, so the tokens are the CPU's.
pub struct DevGenerator {
    pub gpu: Arc<Gpu>,
    pub model: DevModel,
    pub eos: u32,
    pub decoding: DecodeCache,
}

impl Generator for DevGenerator {
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        rng: &mut Rng,
    ) -> Result<Vec<Generation>> {
        let d = &mut self.decoding;
        self.model
            .generate(&self.gpu, d, prompts, params, self.eos, Draws::Host(rng))
    }
}
