//! The CUDA backend: hand-written kernels in `kernels/`, compiled at run time by NVRTC.
//! Everything here loads CUDA libraries dynamically, so the crate builds and its CPU path runs on
//! machines without CUDA. Its parts, each a folder:
//! - `device`: a device (`Gpu`) and its runtimes: CUDA through the driver and NVRTC (`registry`
//!   compiles and caches the kernels), or the emulated device (`emu`);
//! - `ops`: one launcher per kernel, named after the CPU function the kernel mirrors;
//! - `model`: the children's and the encoder's passes (GPT-2, Llama, BERT), decoding, and
//!   `DevModel`, a child of either family;
//! - `policy`: the trainer's jobs on the device, and the frozen reference's prompt cache;
//! - `bench`, `paper_shapes`: throughput figures, and the products of the paper's jobs.

pub mod bench;
pub mod device;
pub mod model;
pub mod ops;
pub mod paper_shapes;
pub mod policy;

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
