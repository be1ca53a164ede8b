//! pgsrm: reinforcement learning of small transformer language models with the Parent-Guided
//! Semantic Reward Model (arXiv 2512.06920). See README.md for the commands, docs/METHOD.md for the
//! method and docs/ARCHITECTURE.md for how the code is laid out.

pub mod assets;

pub mod batch;
pub mod check;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod files;
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

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`, the same number in versions 2 and 3);
/// `libmimalloc-sys` names no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells the allocator never to hand freed memory back to the kernel. By default mimalloc does so
/// 10 ms after a free, so a training step's activations (hundreds of megabytes, freed and
/// allocated again every step) came back as fresh pages that the kernel zeroes on first touch:
/// 12% of a SmolLM2 run's time on the 2-core Intel host. Kept, they are reused; a process holds
/// its peak. Call it first thing, before other threads start (mimalloc's options are not
/// thread-safe); `main` and the benches do.
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option; called before any other thread runs.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
