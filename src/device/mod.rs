//! The device a command runs on, chosen once: the user's `--device` choice, and the device it
//! opens (the CPU, or a GPU: CUDA or the emulated device), shared by everything the command runs
//! there. This is where the backends are wired to the layers that use them through their traits:
//! the policy backend the trainer drives (`ppo::PolicyBackend`), the sentence encoder's passes the
//! reward uses (`reward::embedder::EncoderBackend`), a generator for a local parent
//! (`reward::local_parent::Generators`), and a `Runner` for the commands that run a model outside
//! training. Nothing below this module opens a device or names a backend to its callers.

mod runner;

pub use runner::Runner;

use crate::cpu::bert::CpuEncoder;
use crate::cpu::model::CpuGenerator;
use crate::cpu::policy::CpuPolicy;
use crate::cuda::device::Gpu;
pub use crate::cuda::device::LaunchCounts;
use crate::cuda::model::DevGenerator;
use crate::cuda::model::DevModel;
use crate::cuda::model::bert::DeviceEncoders;
use crate::cuda::policy::CudaPolicy;
use crate::model::spec::Model;
use crate::ppo::{Critic, PolicyBackend, PpoConfig};
use crate::reward::embedder::EncoderBackend;
use crate::reward::local_parent::Generators;
use crate::sample::Generator;
use anyhow::Result;
use std::sync::Arc;

/// Which backend runs the models: `auto` picks CUDA when a device and its driver are present (it
/// never picks the emulated device, which is for checking kernels, not for speed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when a GPU and its driver are present, else the CPU
    Auto,
    /// The CPU reference backend
    Cpu,
    /// A CUDA GPU (kernels compiled by NVRTC)
    Cuda,
    /// The emulated device: the CUDA kernels compiled as C++ and run on the CPU, with checks
    Emu,
}

/// An opened device. Cloning shares it: one GPU serves a command's policy, encoder and models.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Gpu(Arc<Gpu>),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}

impl Device {
    /// Opens what `choice` names: CUDA device `ordinal`, the emulated device, or the CPU (also for
    /// `auto` without a GPU). A missing driver, device or NVRTC fails here, before anything runs.
    pub fn open(choice: DeviceChoice, ordinal: usize) -> Result<Device> {
        use DeviceChoice as D;
        Ok(match choice {
            D::Cpu => Device::Cpu,
            D::Cuda => Device::Gpu(Arc::new(Gpu::new(ordinal)?)),
            D::Emu => Device::Gpu(Arc::new(Gpu::emulated()?)),
            D::Auto if crate::cuda::device_count() > ordinal => {
                Device::Gpu(Arc::new(Gpu::new(ordinal)?))
            }
            D::Auto => Device::Cpu,
        })
    }

    /// `cpu`, or the device's name.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Gpu(g) => g.name.clone(),
        }
    }

    /// The GPU, for the commands that need one (`check`, `bench`).
    /// Says that several threads will use the device at once (`Gpu::share_between_threads`);
    /// nothing to say on the CPU.
    pub fn share_between_threads(&self) {
        if let Some(g) = self.gpu() {
            g.share_between_threads();
        }
    }

    /// The launches asked of the device so far; `None` on the CPU.
    pub fn launch_counts(&self) -> Option<LaunchCounts> {
        self.gpu().map(|g| g.launch_counts())
    }

    /// The buffers made on the device so far; `None` on the CPU.
    pub fn buffers_made(&self) -> Option<u64> {
        self.gpu().map(|g| g.buffers_made())
    }

    pub fn gpu(&self) -> Option<&Arc<Gpu>> {
        match self {
            Device::Cpu => None,
            Device::Gpu(g) => Some(g),
        }
    }

    /// The trainer's policy backend for `model` here; its frozen reference is a copy of `model`.
    pub fn policy(
        &self,
        cfg: PpoConfig,
        model: Model,
        critic: Critic,
        eos: u32,
    ) -> Result<Box<dyn PolicyBackend>> {
        let reference = model.clone();
        Ok(match self {
            Device::Cpu => Box::new(CpuPolicy::new(cfg, model, reference, critic, eos)?),
            Device::Gpu(g) => Box::new(CudaPolicy::new(
                g.clone(),
                cfg,
                model,
                reference,
                critic,
                eos,
            )?),
        })
    }

    /// Where the sentence encoders run here.
    pub fn encoders(&self) -> Arc<dyn EncoderBackend> {
        match self {
            Device::Cpu => Arc::new(CpuEncoder),
            Device::Gpu(g) => Arc::new(DeviceEncoders { gpu: g.clone() }),
        }
    }

    /// `model` here, for the commands that run it outside training.
    pub fn runner<'m>(&self, model: &'m Model) -> Result<Runner<'m>> {
        Runner::new(self, model)
    }
}

impl Generators for Device {
    fn generator(&self, model: Model, eos: u32) -> Result<Box<dyn Generator>> {
        Ok(match self {
            Device::Cpu => Box::new(CpuGenerator { model, eos }),
            Device::Gpu(g) => Box::new(DevGenerator {
                model: DevModel::upload(g, &model)?,
                gpu: g.clone(),
                eos,
                decoding: Default::default(),
            }),
        })
    }
}
