//! The trainer, above the backends: rollout -> reward -> advantage -> update -> KL control.
//!
//! `loss` holds the per-token loss of the paper's policy update and its gradient with respect to
//! the logits; `policy` runs an update's steps once for every backend, over the passes a backend
//! implements (`cpu::policy` on the CPU, `cuda::policy` on a device).

pub mod adamw;
pub mod config;
pub mod kl;
pub mod loss;
pub mod phases;
pub mod policy;
pub mod steps;
pub mod trainer;

pub use adamw::{AdamW, clip_grad_norm};
pub use config::PpoConfig;
pub use kl::KlController;
pub use loss::{Critic, Episode, UpdateLosses};
pub use policy::{Passes, Policy};
pub use trainer::{
    EpisodeRecord, PhaseSeconds, PolicyBackend, PolicyState, Trainer, TrainerState, UpdateStats,
};
