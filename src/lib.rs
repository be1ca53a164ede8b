//! pgsrm: reinforcement learning of small transformer language models with the Parent-Guided
//! Semantic Reward Model. See README.md for the commands and DESIGN.md for the architecture.

pub mod assets;
pub mod backend;
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
pub mod throughput;

/// Training allocates and frees activation buffers of tens of megabytes every step; the system
/// allocator hands each back to the kernel (munmap, then page faults and cross-core TLB flushes on
/// the next step), which made step times swing by half. mimalloc keeps such memory for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
