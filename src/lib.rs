//! pgsrm: reinforcement learning of small transformer language models with the Parent-Guided
//! Semantic Reward Model. See README.md for the commands and DESIGN.md for the architecture.

pub mod assets;
pub mod cpu;
pub mod cuda;
pub mod model;
pub mod ppo;
pub mod reward;
pub mod rng;
pub mod run;
pub mod sample;
pub mod tasks;
pub mod tensor;
