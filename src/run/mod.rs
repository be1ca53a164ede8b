//! A training run on disk: its folder (config, metrics, episodes, checkpoints), the plots of its
//! curves, and reports comparing runs.

pub mod checkpoint;
pub mod eval;
pub mod folder;
pub mod plot;
pub mod progress;
pub mod report;
pub mod train;
pub mod update_bench;

pub use folder::{Resumed, RunDir};
