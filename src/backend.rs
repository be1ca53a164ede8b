//! The backend `--device` names: for the commands that run a model outside training
//! (`generate`, `score`, `eval`) a `Runner`, the CPU reference or a device (a CUDA GPU or the
//! emulated one) holding a copy of the weights; for training, the policy backend.

use crate::batch::Batch;
use crate::cpu::policy::CpuPolicy;
use crate::cuda::DeviceChoice;
use crate::cuda::device::Gpu;
use crate::cuda::model::decode;
use crate::cuda::model::gpt2::GpuGpt2;
use crate::cuda::model::llama::GpuLlama;
use crate::cuda::policy::CudaPolicy;
use crate::model::spec::Model;
use crate::ppo::loss::Critic;
use crate::ppo::{PolicyBackend, PpoConfig};
use crate::rng::Rng;
use crate::sample::Generation;
use crate::sample::SamplingParams;
use anyhow::Result;

/// The weights of a model of either family on a device.
pub enum OnDevice {
    Gpt2(GpuGpt2),
    Llama(GpuLlama),
}

pub enum Runner<'m> {
    Cpu(&'m Model),
    Device { gpu: Gpu, model: Box<OnDevice> },
}

impl<'m> Runner<'m> {
    /// `model` on the backend `device` names (`auto`: a CUDA device when there is one).
    pub fn new(model: &'m Model, device: DeviceChoice) -> Result<Runner<'m>> {
        let Some(gpu) = Gpu::open(device, 0)? else {
            return Ok(Runner::Cpu(model));
        };
        let on = match model {
            Model::Gpt2(m) => OnDevice::Gpt2(GpuGpt2::upload(&gpu, m)?),
            Model::Llama(m) => OnDevice::Llama(GpuLlama::upload(&gpu, m)?),
        };
        Ok(Runner::Device {
            gpu,
            model: Box::new(on),
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
            Runner::Device { gpu, model, .. } => match model.as_ref() {
                OnDevice::Gpt2(m) => decode::generate(gpu, m, prompts, params, eos, seed),
                OnDevice::Llama(m) => decode::generate(gpu, m, prompts, params, eos, seed),
            },
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
                let head = &seq[..seq.len() - 1];
                match model.as_ref() {
                    OnDevice::Gpt2(m) => decode::logits_at_every_position(gpu, m, head),
                    OnDevice::Llama(m) => decode::logits_at_every_position(gpu, m, head),
                }
            }
        }
    }
}

/// The trainer's backend for `model`: the CPU's, or the device's when `gpu` is given. The frozen
/// reference is a copy of `model`.
pub fn policy_backend(
    gpu: Option<Gpu>,
    cfg: PpoConfig,
    model: Model,
    critic: Critic,
    eos: u32,
) -> Result<Box<dyn PolicyBackend>> {
    let reference = model.clone();
    Ok(match gpu {
        None => Box::new(CpuPolicy::new(cfg, model, reference, critic, eos)?),
        Some(gpu) => Box::new(CudaPolicy::new(gpu, cfg, model, reference, critic, eos)?),
    })
}
