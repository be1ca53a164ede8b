//! The CUDA backend: hand-written kernels in `kernels/`, compiled at run time by NVRTC.
//! Everything here loads CUDA libraries dynamically, so the crate builds and its CPU path runs on
//! machines without CUDA.

pub mod bench;
pub mod bert;
pub mod check;
mod check_backward;
mod check_ppo;
mod check_sgemm;
mod check_train;
pub mod decode;
pub mod device;
pub mod emu;
pub mod gpt2;
pub mod gpt2_train;
pub mod llama;
pub mod llama_train;
pub mod nvrtc;
pub mod ops;
pub mod ops_backward;
pub mod ops_loss;
pub mod optim;
pub mod paper_shapes;
pub mod policy;
pub mod policy_model;
pub mod refcache;
pub mod registry;
pub mod sgemm;
pub mod train_batch;

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

/// Whether the CUDA driver library can be loaded (it says nothing about a device being present).
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the shared library; no driver call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices, 0 when there is no driver or no device.
pub fn device_count() -> usize {
    if !driver_present() {
        return 0;
    }
    match cudarc::driver::result::init() {
        Ok(()) => cudarc::driver::result::device::get_count()
            .map(|n| n.max(0) as usize)
            .unwrap_or(0),
        Err(_) => 0,
    }
}
