//! The trainer, above the backends: rollout -> reward -> advantage -> update -> KL control.
//!
//! `loss` holds the per-token loss of PAPER.md's policy update and its gradient with respect to
//! the logits; a backend runs the models around it (`cpu::policy` on the CPU).

pub mod adamw;
pub mod config;
pub mod kl;
pub mod loss;
pub mod steps;
pub mod trainer;

pub use adamw::{AdamW, clip_grad_norm};
pub use config::PpoConfig;
pub use kl::KlController;
pub use loss::{Critic, Episode, UpdateLosses};
pub use trainer::{EpisodeRecord, PolicyBackend, PolicyState, Trainer, TrainerState, UpdateStats};
