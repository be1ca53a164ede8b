//! One CUDA device: its context and stream, the kernels loaded from the registry, and transfers.

use super::{nvrtc, registry};
use anyhow::{Context, Result, anyhow, bail};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    pub arch: &'static str,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl Gpu {
    /// Opens device `ordinal`; fails with a reason when there is no driver, no device or no NVRTC.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !super::driver_present() {
            bail!("no CUDA driver library (libcuda.so) could be loaded");
        }
        let count = super::device_count();
        if ordinal >= count {
            bail!("CUDA device {ordinal} requested, {count} present");
        }
        nvrtc::ensure_loaded()?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| anyhow!("creating a context on device {ordinal}: {e:?}"))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| anyhow!("{e:?}"))?;
        let arch = registry::arch_for(major, minor)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            name,
            arch,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// A kernel entry point of `kernels/<file>`, compiling and loading the file on first use.
    pub fn function(&self, file: &'static str, entry: &str) -> Result<CudaFunction> {
        let mut modules = self.modules.lock().unwrap();
        let module = match modules.get(file) {
            Some(m) => m.clone(),
            None => {
                let ptx = registry::ptx(file, self.arch)?;
                let m = self
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(|e| anyhow!("loading kernels/{file} on {}: {e:?}", self.name))?;
                modules.insert(file, m.clone());
                m
            }
        };
        module
            .load_function(entry)
            .map_err(|e| anyhow!("no kernel {entry} in kernels/{file}: {e:?}"))
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(host)
            .map_err(|e| anyhow!("copy to device: {e:?}"))
    }

    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream
            .clone_dtoh(dev)
            .map_err(|e| anyhow!("copy from device: {e:?}"))
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(n)
            .map_err(|e| anyhow!("allocating {n} elements: {e:?}"))
    }

    /// A buffer of NaNs, so that an element a kernel fails to write shows up in a comparison.
    pub fn poisoned(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.upload(&vec![f32::NAN; n])
    }

    /// Waits for the stream; an asynchronous kernel fault surfaces here.
    pub fn sync(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| anyhow!("CUDA stream failed: {e:?}"))
            .context("after a kernel launch")
    }
}
