//! The device backend's jobs for the trainer, mirroring `cpu::policy::CpuPolicy`.

use super::device::Gpu;
use crate::model::spec::Model;
use crate::ppo::config::PpoConfig;
use crate::ppo::loss::{Critic, Episode, UpdateLosses};
use crate::ppo::trainer::{PolicyBackend, PolicyState};
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams};
use anyhow::{Result, bail};

/// The policy, its frozen reference, the value head and both optimisers on a device.
pub struct CudaPolicy {
    gpu: Gpu,
}

impl CudaPolicy {
    pub fn new(
        gpu: Gpu,
        cfg: PpoConfig,
        model: Model,
        reference: Model,
        critic: Critic,
        eos: u32,
    ) -> Result<Self> {
        let _ = (cfg, model, reference, critic, eos);
        bail!("training on {} is not written yet", gpu.name)
    }
}

impl PolicyBackend for CudaPolicy {
    fn generate(
        &mut self,
        _prompts: &[Vec<u32>],
        _params: &SamplingParams,
        _rng: &mut Rng,
    ) -> Result<Vec<Generation>> {
        bail!("not written yet")
    }

    fn update(
        &mut self,
        _episodes: &[Episode],
        _kl_coef: f32,
        _rng: &mut Rng,
    ) -> Result<UpdateLosses> {
        bail!("not written yet")
    }

    fn state(&self) -> Result<PolicyState> {
        bail!("not written yet")
    }

    fn restore(&mut self, _state: PolicyState) -> Result<()> {
        bail!("not written yet")
    }

    fn device(&self) -> String {
        self.gpu.name.clone()
    }
}
