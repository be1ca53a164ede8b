//! A model on a device for the commands that run it outside training (`generate`, `score`,
//! `eval`): the CPU reference, or a copy of the weights on a GPU.

use super::Device;
use crate::batch::Batch;
use crate::cuda::device::Gpu;
use crate::cuda::model::DevModel;
use crate::cuda::model::generate::{DecodeCache, Draws};
use crate::model::spec::Model;
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams};
use anyhow::Result;
use std::sync::Arc;

pub enum Runner<'m> {
    Cpu(&'m Model),
    Device { gpu: Arc<Gpu>, model: Box<DevModel> },
}

impl<'m> Runner<'m> {
    /// `model` on `device`: the weights are copied to a GPU once.
    pub fn new(device: &Device, model: &'m Model) -> Result<Runner<'m>> {
        Ok(match device {
            Device::Cpu => Runner::Cpu(model),
            Device::Gpu(gpu) => Runner::Device {
                model: Box::new(DevModel::upload(gpu, model)?),
                gpu: gpu.clone(),
            },
        })
    }

    /// What runs the model: `cpu`, or the device's name.
    pub fn device_name(&self) -> String {
        match self {
            Runner::Cpu(_) => "cpu".into(),
            Runner::Device { gpu, .. } => gpu.name.clone(),
        }
    }

    /// Samples continuations of every prompt together. A seed gives the same tokens on every run
    /// of a backend; the CPU draws from a sequential generator and devices from one keyed by
    /// (seed, row, step), so at a temperature above 0 the CPU's tokens differ from a device's
    /// (greedy decoding agrees).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        eos: u32,
        seed: u64,
    ) -> Result<Vec<Generation>> {
        match self {
            Runner::Cpu(m) => {
                crate::cpu::model::generate(m, prompts, params, eos, &mut Rng::new(seed))
            }
            Runner::Device { gpu, model } => {
                let mut once = DecodeCache::new(false);
                model.generate(gpu, &mut once, prompts, params, eos, Draws::Keyed(seed))
            }
        }
    }

    /// The logits (T - 1, V) of one sequence of T tokens at its first T - 1 positions: row p
    /// predicts token p + 1.
    pub fn next_token_logits(&self, seq: &[u32]) -> Result<Vec<f32>> {
        if seq.len() < 2 {
            return Ok(Vec::new());
        }
        match self {
            Runner::Cpu(m) => {
                let batch = Batch::left_padded(std::slice::from_ref(&seq.to_vec()), 0)?;
                let positions: Vec<(usize, usize)> = (0..seq.len() - 1).map(|p| (0, p)).collect();
                Ok(crate::cpu::model::logits(m, &batch, &positions)?.data)
            }
            Runner::Device { gpu, model } => {
                model.logits_at_every_position(gpu, &seq[..seq.len() - 1])
            }
        }
    }
}
