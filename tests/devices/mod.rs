//! The devices the device tests run on: the emulated device, and the first CUDA device when one
//! is present. `PGSRM_TEST_DEVICES=cuda` runs them on the CUDA device alone (a GPU machine
//! without a C++ compiler for the emulated device), and fails when there is none.

use pgsrm::cuda::device::Gpu;

pub fn devices() -> Vec<Gpu> {
    let cuda = || Gpu::new(0).expect("CUDA device 0 opens");
    if std::env::var("PGSRM_TEST_DEVICES").is_ok_and(|v| v == "cuda") {
        return vec![cuda()];
    }
    let mut out = vec![Gpu::emulated().expect("the emulated device needs a C++ compiler")];
    if pgsrm::cuda::device_count() > 0 {
        out.push(cuda());
    }
    out
}
