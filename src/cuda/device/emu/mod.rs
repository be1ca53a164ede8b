//! The emulated device: the kernels of `kernels/` compiled as C++ by the system's compiler and run
//! on the CPU, each CUDA thread a fiber, blocks spread over the cores (see `cuda_emu.h` and
//! `runtime.cpp`). It is reached through the same `Gpu`, buffers and launches as a real device,
//! so the launchers and host models run on it unchanged, and it checks what a GPU run does not:
//! barriers every thread must reach, warp masks, races (threads in other orders: `Schedule`),
//! reads of unwritten memory (poisoned buffers and shared memory) and out-of-bounds accesses
//! (guard pages). It is a correctness tool, never a speed figure.

pub mod compile;

use anyhow::{Context, Result, anyhow, bail};
use compile::{Compiler, KernelDecl};
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};
use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One launch, as `runtime.cpp` reads it.
#[repr(C)]
struct LaunchDesc {
    kernel: unsafe extern "C" fn(*mut *mut c_void),
    args: *mut *mut c_void,
    module_tls: unsafe extern "C" fn(*mut *mut c_void, *mut usize),
    name: *const c_char,
    grid: [c_uint; 3],
    block: [c_uint; 3],
    dyn_smem: usize,
    schedule: c_int,
    seed: u64,
    poison: c_int,
    error: *mut c_char,
    error_cap: usize,
}

struct Runtime {
    _lib: Library,
    launch: unsafe extern "C" fn(*const LaunchDesc) -> c_int,
    alloc: unsafe extern "C" fn(usize, usize) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
    workers: unsafe extern "C" fn() -> c_uint,
}

static COMPILER: OnceLock<Result<Compiler, String>> = OnceLock::new();
static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
/// Loaded modules, by kernel file name (or by a hash for sources given as text): a module is
/// built and loaded once per process and never unloaded.
static MODULES: OnceLock<Mutex<HashMap<String, Arc<Module>>>> = OnceLock::new();

fn compiler() -> Result<&'static Compiler> {
    COMPILER
        .get_or_init(|| Compiler::find().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Copies a symbol of `lib` out as a plain function pointer (the library is never unloaded).
///
/// # Safety
/// `T` must be the symbol's true type.
unsafe fn symbol<T: Copy>(lib: &Library, name: &str) -> Result<T> {
    // SAFETY: the caller names the type; the library outlives every use (it is never closed).
    let s = unsafe { lib.get::<T>(name.as_bytes()) }
        .with_context(|| format!("the emulated device's library has no symbol {name}"))?;
    Ok(*s)
}

fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            let load = || -> Result<Runtime> {
                let path = compile::build(
                    compiler()?,
                    "runtime",
                    &compile::runtime_source(),
                    "the runtime",
                )?;
                // Global, so that the kernel modules loaded later find its functions.
                // SAFETY: the runtime's initialisers only set up plain data.
                let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) }
                    .with_context(|| format!("loading {}", path.display()))?;
                // SAFETY: the types match runtime.cpp's definitions.
                unsafe {
                    Ok(Runtime {
                        launch: symbol(&lib, "emu_rt_launch")?,
                        alloc: symbol(&lib, "emu_rt_alloc")?,
                        free: symbol(&lib, "emu_rt_free")?,
                        workers: symbol(&lib, "emu_rt_workers")?,
                        _lib: lib,
                    })
                }
            };
            load().map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// A kernel of a loaded module.
struct Kernel {
    entry: unsafe extern "C" fn(*mut *mut c_void),
    /// The size in bytes of each parameter, in order.
    params: Vec<u32>,
    max_threads: Option<u32>,
}

/// One kernel file, compiled and loaded.
pub struct Module {
    /// What the module was built from: `kernels/<file>`, or the name given with the source.
    pub label: String,
    _lib: Library,
    tls: unsafe extern "C" fn(*mut *mut c_void, *mut usize),
    kernels: HashMap<String, Kernel>,
}

impl Module {
    fn load(label: &str, source: &str, decls: &[KernelDecl]) -> Result<Module> {
        let stem = label
            .trim_start_matches("kernels/")
            .trim_end_matches(".cu")
            .replace(['/', '.'], "_");
        let path = compile::build(compiler()?, &stem, source, label)?;
        // SAFETY: a module's initialisers only set up plain data.
        let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }
            .with_context(|| format!("loading {}", path.display()))?;
        let mut kernels = HashMap::new();
        for d in decls {
            // SAFETY: the trampolines and signature functions have these types (compile.rs).
            let (entry, sig) = unsafe {
                (
                    symbol::<unsafe extern "C" fn(*mut *mut c_void)>(
                        &lib,
                        &format!("emu_k_{}", d.name),
                    )?,
                    symbol::<unsafe extern "C" fn(*mut c_uint) -> *const c_uint>(
                        &lib,
                        &format!("emu_sig_{}", d.name),
                    )?,
                )
            };
            let mut n: c_uint = 0;
            // SAFETY: the signature function writes the count and returns that many sizes.
            let params = unsafe {
                let p = sig(&mut n);
                std::slice::from_raw_parts(p, n as usize).to_vec()
            };
            kernels.insert(
                d.name.clone(),
                Kernel {
                    entry,
                    params,
                    max_threads: d.max_threads,
                },
            );
        }
        // SAFETY: defined by cuda_emu.h in every module.
        let tls = unsafe { symbol(&lib, "emu_module_tls")? };
        Ok(Module {
            label: label.to_string(),
            _lib: lib,
            tls,
            kernels,
        })
    }

    /// The `__launch_bounds__` limit of a kernel, if it has one.
    pub fn max_threads(&self, entry: &str) -> Option<u32> {
        self.kernels.get(entry).and_then(|k| k.max_threads)
    }
}

/// The order in which the threads of a block run between barriers (runtime.cpp's `EmuSchedule`,
/// where each is explained). Each thread runs until it waits at a barrier or a warp collective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Passes over the threads in index order (the default).
    InOrder,
    /// Passes over the threads in a random order drawn from the seed anew each pass.
    Shuffled(u64),
    /// Warp 0 until none of its lanes can run, then warp 1, and so on.
    WarpsForward,
    /// The last warp first; the lanes of each warp in a random order drawn from the seed (in
    /// index order for seed 0).
    WarpsReverse(u64),
}

impl Schedule {
    fn code(self) -> (c_int, u64) {
        match self {
            Schedule::InOrder => (0, 0),
            Schedule::Shuffled(seed) => (1, seed),
            Schedule::WarpsForward => (2, 0),
            Schedule::WarpsReverse(seed) => (3, seed),
        }
    }
}

/// Device memory of the emulated device: host memory between guard pages.
pub struct HostMem {
    ptr: *mut c_void,
    rt: &'static Runtime,
    bytes: usize,
    /// The device's count of bytes in use, which this buffer gives back when dropped.
    used: Arc<AtomicUsize>,
}

// SAFETY: the memory is owned by this handle alone; kernels and copies reach it through the
// device, which orders them.
unsafe impl Send for HostMem {}
// SAFETY: as above; shared references only read the address.
unsafe impl Sync for HostMem {}

impl HostMem {
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        // SAFETY: allocated by this runtime's alloc and freed once.
        unsafe { (self.rt.free)(self.ptr) };
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A launch argument's bytes (at most 8), as the kernel's parameter reads them.
#[derive(Clone, Copy)]
pub struct ArgBytes {
    pub bits: u64,
    pub size: u32,
}

/// The emulated device.
pub struct EmuDevice {
    rt: &'static Runtime,
    pub workers: usize,
    pub compiler: String,
    schedule: Mutex<Schedule>,
    poison: AtomicU8,
    /// Bytes of device memory in use, and how many there are (`PGSRM_EMU_MEMORY`; unbounded
    /// when unset), so that running out of device memory can be tried without a GPU.
    used: Arc<AtomicUsize>,
    pub memory: Option<usize>,
}

/// The environment variable that gives the emulated device a memory size, in bytes or with a
/// K, M or G suffix (powers of 1024).
pub const MEMORY_VAR: &str = "PGSRM_EMU_MEMORY";

/// `PGSRM_EMU_MEMORY`'s bytes: `None` when unset.
fn memory_size() -> Result<Option<usize>> {
    let Some(text) = std::env::var_os(MEMORY_VAR) else {
        return Ok(None);
    };
    let text = text.to_string_lossy().trim().to_string();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text.as_str(), 'B'),
    };
    let scale: usize = match unit {
        'B' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        _ => bail!("{MEMORY_VAR}={text}: give bytes, or a number with K, M or G"),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| anyhow!("{MEMORY_VAR}={text}: give bytes, or a number with K, M or G"))?;
    Ok(Some(n.saturating_mul(scale)))
}

/// The byte fresh buffers and shared memory are filled with by default: every float a NaN,
/// every integer -1.
pub const POISON: u8 = 0xff;

impl EmuDevice {
    /// Builds (or finds cached) and loads the runtime; fails when there is no C++ compiler.
    pub fn open() -> Result<EmuDevice> {
        let rt = runtime()?;
        // SAFETY: no arguments; starts the worker threads once.
        let workers = unsafe { (rt.workers)() } as usize;
        Ok(EmuDevice {
            rt,
            workers,
            compiler: compiler()?.version.clone(),
            schedule: Mutex::new(Schedule::InOrder),
            poison: AtomicU8::new(POISON),
            used: Arc::new(AtomicUsize::new(0)),
            memory: memory_size()?,
        })
    }

    /// How the threads of a block are ordered between barriers, and the byte fresh buffers and
    /// shared memory are poisoned with.
    pub fn set_schedule(&self, schedule: Schedule, poison: u8) {
        *self.schedule.lock().unwrap() = schedule;
        self.poison.store(poison, Ordering::Relaxed);
    }

    pub fn schedule(&self) -> Schedule {
        *self.schedule.lock().unwrap()
    }

    pub fn poison(&self) -> u8 {
        self.poison.load(Ordering::Relaxed)
    }

    /// `bytes` of device memory, ending at a guard page; zero-filled. Past the device's memory
    /// size the error is the one a GPU gives.
    pub fn alloc(&self, bytes: usize, align: usize) -> Result<HostMem> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if let Some(limit) = self.memory
            && before + bytes > limit
        {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            bail!(
                "out of device memory (CUDA_ERROR_OUT_OF_MEMORY): {bytes} bytes asked for with \
                 {before} of the emulated device's {limit} in use ({MEMORY_VAR})"
            );
        }
        // SAFETY: plain allocation; null means the mapping failed.
        let ptr = unsafe { (self.rt.alloc)(bytes, align) };
        if ptr.is_null() {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            bail!("the emulated device could not map {bytes} bytes");
        }
        Ok(HostMem {
            ptr,
            rt: self.rt,
            bytes,
            used: self.used.clone(),
        })
    }

    /// Bytes of device memory in use.
    pub fn memory_used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The module of `kernels/<file>`, built and loaded on first use.
    pub fn module(&self, file: &str) -> Result<Arc<Module>> {
        let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(m) = modules.lock().unwrap().get(file) {
            return Ok(m.clone());
        }
        let (src, decls) = compile::module_source(file)?;
        let m = Arc::new(Module::load(&format!("kernels/{file}"), &src, &decls)?);
        modules.lock().unwrap().insert(file.to_string(), m.clone());
        Ok(m)
    }

    /// A module from CUDA source text named `name` (kernels kept outside `kernels/`, such as the
    /// deliberately broken ones of the tests).
    pub fn module_from_source(&self, name: &str, cuda: &str) -> Result<Arc<Module>> {
        let key = format!(
            "{name}#{:016x}",
            crate::cuda::device::registry::fnv1a(&[cuda.as_bytes()])
        );
        let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(m) = modules.lock().unwrap().get(&key) {
            return Ok(m.clone());
        }
        let text = format!("#line 1 \"{name}\"\n{cuda}");
        let (src, decls) = compile::module_source_from(&text)?;
        let m = Arc::new(Module::load(name, &src, &decls)?);
        modules.lock().unwrap().insert(key, m.clone());
        Ok(m)
    }

    /// Runs `entry` of `module` to completion on a grid of blocks. The arguments are checked
    /// against the kernel's parameters first.
    pub fn launch(
        &self,
        module: &Module,
        entry: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dyn_smem: usize,
        args: &[ArgBytes],
    ) -> Result<()> {
        let k = module
            .kernels
            .get(entry)
            .ok_or_else(|| anyhow!("no kernel {entry} in {}", module.label))?;
        let given: Vec<u32> = args.iter().map(|a| a.size).collect();
        if given != k.params {
            bail!(
                "launching {entry}: the kernel takes {} parameters of {:?} bytes, the launch passes {} of {:?} bytes",
                k.params.len(),
                k.params,
                given.len(),
                given
            );
        }
        let mut values: Vec<u64> = args.iter().map(|a| a.bits).collect();
        let mut ptrs: Vec<*mut c_void> = values
            .iter_mut()
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        let name = CString::new(entry)?;
        let mut error = vec![0u8; 4096];
        let (schedule, seed) = self.schedule().code();
        let desc = LaunchDesc {
            kernel: k.entry,
            args: ptrs.as_mut_ptr(),
            module_tls: module.tls,
            name: name.as_ptr(),
            grid,
            block,
            dyn_smem,
            schedule,
            seed,
            poison: self.poison() as c_int,
            error: error.as_mut_ptr() as *mut c_char,
            error_cap: error.len(),
        };
        // SAFETY: every pointer in `desc` lives until the call returns (the launch is
        // synchronous); the arguments match the kernel's parameter sizes (checked above) and the
        // caller passes buffers large enough for the sizes it gives.
        let rc = unsafe { (self.rt.launch)(&desc) };
        if rc != 0 {
            let end = error.iter().position(|&b| b == 0).unwrap_or(error.len());
            bail!(
                "emulated device: {} ({})",
                String::from_utf8_lossy(&error[..end]),
                module.label
            );
        }
        Ok(())
    }
}
