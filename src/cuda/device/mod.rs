//! One device interface over a CUDA GPU (cudarc, kernels compiled by NVRTC) and the emulated
//! device (the same kernels compiled as C++ and run on the CPU): buffers of one type, `DevBuf`,
//! and launches through one call, `Gpu::launch`, so every launcher and host model runs on both
//! with no per-backend branch.

pub mod emu;
mod mark;
pub mod nvrtc;
pub mod registry;
mod replayed;

use anyhow::{Context, Result, anyhow, bail};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    PushKernelArg, ValidAsZeroBits,
};
use emu::{ArgBytes, EmuDevice, HostMem};
pub use mark::Mark;
pub use replayed::{Replayed, graphs_wanted};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

/// The element types device buffers hold.
pub trait DevElem: DeviceRepr + ValidAsZeroBits + bytemuck::Pod + Default + Send + Sync {}
impl DevElem for f32 {}
impl DevElem for i32 {}
impl DevElem for u32 {}
impl DevElem for f64 {}
impl DevElem for u64 {}
impl DevElem for i64 {}

enum Mem<T> {
    Cuda(CudaSlice<T>),
    Emu(HostMem, PhantomData<T>),
}

/// A buffer of `len` elements on a device.
pub struct DevBuf<T: DevElem> {
    len: usize,
    addr: u64,
    mem: Mem<T>,
}

impl<T: DevElem> DevBuf<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of element `offset`, as a kernel argument (a view into the buffer).
    pub fn at(&self, offset: usize) -> Result<Arg> {
        if offset > self.len {
            bail!(
                "offset {offset} is past the end of a buffer of {} elements",
                self.len
            );
        }
        Ok(Arg::Ptr(self.addr + (offset * size_of::<T>()) as u64))
    }

    /// The buffer's device address (a table of buffers that a kernel reads holds these).
    pub fn address(&self) -> u64 {
        self.addr
    }

    /// Whether the buffer starts at a multiple of `bytes` (float4 loads need 16).
    pub fn aligned(&self, bytes: u64) -> bool {
        self.addr.is_multiple_of(bytes)
    }

    /// The CUDA slice behind the buffer, for libraries that take one (cuBLAS); `None` on the
    /// emulated device.
    pub fn cuda(&self) -> Option<&CudaSlice<T>> {
        match &self.mem {
            Mem::Cuda(s) => Some(s),
            Mem::Emu(..) => None,
        }
    }

    pub fn cuda_mut(&mut self) -> Option<&mut CudaSlice<T>> {
        match &mut self.mem {
            Mem::Cuda(s) => Some(s),
            Mem::Emu(..) => None,
        }
    }
}

/// A kernel argument: a device address or a scalar of the kernel parameter's exact type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    F32(f32),
    I64(i64),
    U64(u64),
}

impl Arg {
    /// A null pointer, for an optional buffer left out.
    pub const NULL: Arg = Arg::Ptr(0);

    fn bytes(self) -> ArgBytes {
        let (bits, size) = match self {
            Arg::Ptr(p) | Arg::U64(p) => (p, 8),
            Arg::I64(x) => (x as u64, 8),
            Arg::I32(x) => (x as u32 as u64, 4),
            Arg::U32(x) => (x as u64, 4),
            Arg::F32(x) => (x.to_bits() as u64, 4),
        };
        ArgBytes { bits, size }
    }
}

/// Each scalar type a kernel parameter has, and its `Arg`.
macro_rules! scalar_args {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Arg {
            fn from(x: $t) -> Arg {
                Arg::$v(x)
            }
        }
    )*};
}
scalar_args!(i32 => I32, u32 => U32, f32 => F32, i64 => I64, u64 => U64);

impl<T: DevElem> From<&DevBuf<T>> for Arg {
    fn from(b: &DevBuf<T>) -> Arg {
        Arg::Ptr(b.addr)
    }
}
impl<T: DevElem> From<&mut DevBuf<T>> for Arg {
    fn from(b: &mut DevBuf<T>) -> Arg {
        Arg::Ptr(b.addr)
    }
}
impl<T: DevElem> From<Option<&DevBuf<T>>> for Arg {
    fn from(b: Option<&DevBuf<T>>) -> Arg {
        b.map_or(Arg::NULL, Arg::from)
    }
}

/// The shape of a launch: blocks in the grid, threads in a block, dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub blocks: [u32; 3],
    pub threads: [u32; 3],
    pub shared_bytes: u32,
}

impl Grid {
    /// Enough blocks of `threads` for `n` threads in a line (at least one block).
    pub fn linear(n: usize, threads: u32) -> Grid {
        Grid {
            blocks: [n.div_ceil(threads as usize).max(1) as u32, 1, 1],
            threads: [threads, 1, 1],
            shared_bytes: 0,
        }
    }

    /// One block of `threads` per row.
    pub fn per_row(rows: usize, threads: u32) -> Grid {
        Grid {
            blocks: [rows.max(1) as u32, 1, 1],
            threads: [threads, 1, 1],
            shared_bytes: 0,
        }
    }

    fn threads_per_block(&self) -> u64 {
        self.threads.iter().map(|&t| t as u64).product()
    }
}

/// What a launch of `entry` may not exceed on any CUDA device we compile for; the errors say what
/// the driver says, before anything runs.
fn check_grid(entry: &str, g: &Grid, launch_bound: Option<u32>) -> Result<()> {
    let t = g.threads_per_block();
    let [bx, by, bz] = g.threads;
    if t == 0 || t > 1024 || bx > 1024 || by > 1024 || bz > 64 {
        bail!(
            "launching {entry}: CUDA_ERROR_INVALID_VALUE: a block of {:?} = {t} threads; a block \
             holds 1 to 1024 threads, at most (1024, 1024, 64) per dimension",
            g.threads
        );
    }
    let [gx, gy, gz] = g.blocks;
    if gx == 0 || gy == 0 || gz == 0 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
        bail!(
            "launching {entry}: CUDA_ERROR_INVALID_VALUE: a grid of {:?} blocks; each dimension \
             needs at least 1 block, at most (2^31 - 1, 65535, 65535)",
            g.blocks
        );
    }
    if let Some(max) = launch_bound.filter(|&m| t > m as u64) {
        bail!(
            "launching {entry}: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (too many resources requested \
             for launch): {t} threads per block, but the kernel is built for at most {max} \
             (its __launch_bounds__)"
        );
    }
    if g.shared_bytes > 48 * 1024 {
        bail!(
            "launching {entry}: CUDA_ERROR_INVALID_VALUE: {} bytes of dynamic shared memory; a \
             launch gets at most 49152 without opting in",
            g.shared_bytes
        );
    }
    Ok(())
}

/// The `__launch_bounds__` limit of every kernel of `kernels/`, read from the sources once; a
/// launch then looks its kernel up without a lock or an allocation.
fn launch_bound(file: &str, entry: &str) -> Result<Option<u32>> {
    type Bounds = HashMap<&'static str, HashMap<String, Option<u32>>>;
    static BOUNDS: std::sync::OnceLock<std::result::Result<Bounds, String>> =
        std::sync::OnceLock::new();
    let read = || -> Result<Bounds> {
        let mut m: Bounds = HashMap::new();
        for f in registry::kernel_files() {
            let decls = emu::compile::kernel_decls(&registry::source(f)?)?;
            let of_file = m.entry(f).or_default();
            for d in decls {
                of_file.insert(d.name, d.max_threads);
            }
        }
        Ok(m)
    };
    let bounds = BOUNDS
        .get_or_init(|| read().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("reading the kernels' launch bounds: {e}"))?;
    bounds
        .get(file)
        .and_then(|m| m.get(entry))
        .copied()
        .ok_or_else(|| anyhow!("no kernel {entry} in kernels/{file}"))
}

/// A CUDA device: its context and one stream for everything, and the kernels loaded from the registry.
struct Driver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Kernels already looked up, by (file, entry): a launch costs no driver lookup.
    functions: std::sync::RwLock<HashMap<&'static str, HashMap<String, CudaFunction>>>,
}

enum Dev {
    Cuda(Driver),
    Emu(EmuDevice),
}

/// A device: a CUDA GPU or the emulated device.
pub struct Gpu {
    pub name: String,
    /// `compute_XY` on a GPU, `emulated` on the emulated device.
    pub arch: &'static str,
    dev: Dev,
    /// Scratch memory for an op's work between its blocks (the partial products of a split
    /// product and its counters), grown on demand and kept: no allocation per call.
    scratch: Mutex<Scratch>,
    /// The graph being recorded, if any (`Gpu::capture`).
    capture: Mutex<Option<Capture>>,
    /// What the host has asked the device to run so far.
    counts: Counts,
    /// The device's memory in bytes, read when it was opened (`memory_bytes`).
    memory: Option<u64>,
    /// Set when several threads use the device at once: they share its one stream, and a graph
    /// recorded on it would take in the others' work, so none is recorded.
    shared: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Counts {
    kernels: AtomicU64,
    graphs: AtomicU64,
    copies: AtomicU64,
    memsets: AtomicU64,
    /// Bytes of every buffer made so far (freed ones included).
    allocated: AtomicU64,
    /// Buffers made so far.
    buffers: AtomicU64,
}

/// What the host has asked a device to run: kernel launches one by one, graph launches (each
/// one call for all the kernels it recorded), and copies between device buffers and zeroings of
/// a buffer one by one. The cost on the host, and on a GPU each call's few microseconds, go with
/// these counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LaunchCounts {
    pub kernels: u64,
    pub graphs: u64,
    pub copies: u64,
    pub memsets: u64,
}

impl std::ops::Sub for LaunchCounts {
    type Output = LaunchCounts;
    fn sub(self, before: LaunchCounts) -> LaunchCounts {
        LaunchCounts {
            kernels: self.kernels - before.kernels,
            graphs: self.graphs - before.graphs,
            copies: self.copies - before.copies,
            memsets: self.memsets - before.memsets,
        }
    }
}

/// The scratch buffers: floats whose contents are not set, and counters, zero between the calls
/// that use them (each call leaves them so).
#[derive(Default)]
struct Scratch {
    floats: Grown<f32>,
    counters: Grown<u32>,
}

/// A buffer grown on demand, and those it outgrew while a graph may still read them: a graph
/// holds the addresses it was recorded with, so a buffer one reads is never freed.
struct Grown<T: DevElem> {
    buf: Option<Box<DevBuf<T>>>,
    outgrown: Vec<DevBuf<T>>,
    /// Whether a graph was recorded with the current buffer.
    in_graph: bool,
}

impl<T: DevElem> Default for Grown<T> {
    fn default() -> Self {
        Grown {
            buf: None,
            outgrown: Vec::new(),
            in_graph: false,
        }
    }
}

impl<T: DevElem> Grown<T> {
    /// The buffer, at least `n` long: a new one from `make` when it is shorter.
    fn at_least(
        &mut self,
        n: usize,
        make: impl FnOnce(usize) -> Result<DevBuf<T>>,
    ) -> Result<&mut DevBuf<T>> {
        if self.buf.as_ref().is_none_or(|b| b.len() < n) {
            let grown = Box::new(make(n.max(1))?);
            if let Some(old) = self.buf.replace(grown)
                && self.in_graph
            {
                self.outgrown.push(*old);
            }
            self.in_graph = false;
        }
        Ok(self.buf.as_mut().unwrap())
    }
}

/// A recording in progress: the thread recording, and on the emulated device the launches so far.
struct Capture {
    thread: ThreadId,
    launches: Vec<EmuLaunch>,
}

/// A launch as the emulated device replays it.
struct EmuLaunch {
    module: Arc<emu::Module>,
    entry: String,
    grid: Grid,
    args: Vec<ArgBytes>,
}

/// Kernel launches recorded once (`Gpu::capture`) and replayed as one (`Gpu::replay`): a CUDA
/// graph on a GPU, the list of launches on the emulated device. A replay runs the kernels with
/// the arguments they were recorded with, so every buffer they name must outlive the graph and
/// whatever changes between replays must be written into those buffers first.
pub struct Graph {
    inner: GraphInner,
    /// Launches recorded.
    pub launches: usize,
}

enum GraphInner {
    Cuda(cudarc::driver::CudaGraph),
    Emu(Vec<EmuLaunch>),
}

// SAFETY: a graph is only launched on the stream of the device that recorded it, through
// `Gpu::replay`, which takes it by reference from one owner at a time; CUDA requires no more
// than that calls on one graph do not overlap, and a `Graph` is not `Sync`.
unsafe impl Send for Graph {}

impl Gpu {
    /// Opens CUDA device `ordinal`; fails with a reason when there is no driver, no device or no NVRTC.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !crate::cuda::driver_present() {
            bail!("--device cuda: no CUDA driver library (libcuda.so) could be loaded");
        }
        let count = crate::cuda::device_count();
        if ordinal >= count {
            bail!("--device cuda: CUDA device {ordinal} requested, {count} present");
        }
        nvrtc::ensure_loaded().context("--device cuda")?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| anyhow!("creating a context on device {ordinal}: {e:?}"))?;
        // SAFETY: everything runs on the one stream below, so no cross-stream ordering is needed.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(|e| anyhow!("{e:?}"))?;
        let arch = registry::arch_for(major, minor)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        keep_freed_memory(&ctx)?;
        // A stream of our own, not the legacy default stream: CUDA cannot record a graph from that.
        let stream = ctx
            .new_stream()
            .map_err(|e| anyhow!("creating a stream on device {ordinal}: {e:?}"))?;
        let memory = ctx.mem_get_info().ok().map(|(_, total)| total as u64);
        Ok(Gpu {
            name,
            arch,
            dev: Dev::Cuda(Driver {
                ctx,
                stream,
                modules: Mutex::new(HashMap::new()),
                functions: Default::default(),
            }),
            scratch: Mutex::default(),
            capture: Mutex::new(None),
            counts: Counts::default(),
            memory,
            shared: Default::default(),
        })
    }

    /// The emulated device; fails when there is no C++ compiler to build it with.
    pub fn emulated() -> Result<Self> {
        let e = EmuDevice::open().context("--device emu")?;
        let memory = e.memory.map(|m| m as u64);
        Ok(Gpu {
            name: format!("emulated device ({} workers, {})", e.workers, e.compiler),
            arch: "emulated",
            dev: Dev::Emu(e),
            scratch: Mutex::default(),
            capture: Mutex::new(None),
            counts: Counts::default(),
            memory,
            shared: Default::default(),
        })
    }

    /// The emulated device behind this one, if it is that (to set its schedule).
    pub fn emu(&self) -> Option<&EmuDevice> {
        match &self.dev {
            Dev::Emu(e) => Some(e),
            Dev::Cuda(_) => None,
        }
    }

    /// The CUDA stream everything runs on; `None` on the emulated device.
    pub fn cuda_stream(&self) -> Option<&Arc<CudaStream>> {
        match &self.dev {
            Dev::Cuda(d) => Some(&d.stream),
            Dev::Emu(_) => None,
        }
    }

    fn cuda_function(
        d: &Driver,
        arch: &'static str,
        file: &'static str,
        entry: &str,
    ) -> Result<CudaFunction> {
        let found = d.functions.read().unwrap();
        if let Some(f) = found.get(file).and_then(|m| m.get(entry)) {
            return Ok(f.clone());
        }
        drop(found);
        let mut modules = d.modules.lock().unwrap();
        let module = match modules.get(file) {
            Some(m) => m.clone(),
            None => {
                let ptx = registry::ptx(file, arch)?;
                let m = d
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(|e| anyhow!("loading kernels/{file}: {e:?}"))?;
                modules.insert(file, m.clone());
                m
            }
        };
        let f = module
            .load_function(entry)
            .map_err(|e| anyhow!("no kernel {entry} in kernels/{file}: {e:?}"))?;
        let mut functions = d.functions.write().unwrap();
        functions
            .entry(file)
            .or_default()
            .insert(entry.to_string(), f.clone());
        Ok(f)
    }

    /// Launches kernel `entry` of `kernels/<file>` on `grid` with `args`, which must match the
    /// kernel's parameters in order and type. Launch shapes no device accepts fail first.
    pub fn launch(&self, file: &'static str, entry: &str, grid: Grid, args: &[Arg]) -> Result<()> {
        check_grid(entry, &grid, launch_bound(file, entry)?)?;
        if self.recorded(entry, || Ok((self.emu_module(file)?, grid, args)))? {
            return Ok(());
        }
        match &self.dev {
            Dev::Cuda(d) => {
                let f = Self::cuda_function(d, self.arch, file, entry)?;
                let mut b = d.stream.launch_builder(&f);
                for a in args {
                    match a {
                        Arg::Ptr(x) | Arg::U64(x) => b.arg(x),
                        Arg::I32(x) => b.arg(x),
                        Arg::U32(x) => b.arg(x),
                        Arg::F32(x) => b.arg(x),
                        Arg::I64(x) => b.arg(x),
                    };
                }
                let cfg = cudarc::driver::LaunchConfig {
                    grid_dim: (grid.blocks[0], grid.blocks[1], grid.blocks[2]),
                    block_dim: (grid.threads[0], grid.threads[1], grid.threads[2]),
                    shared_mem_bytes: grid.shared_bytes,
                };
                // SAFETY: each launcher passes the arguments its kernel declares, in order, with
                // buffers whose lengths it checked against the sizes it passes.
                unsafe { b.launch(cfg) }.map_err(|e| anyhow!("launching {entry}: {e:?}"))?;
                Ok(())
            }
            Dev::Emu(e) => {
                let m = e.module(file)?;
                Self::emu_launch(e, &m, entry, grid, args)
            }
        }
    }

    /// Launches `entry` of a kernel source given as text, named `name` in messages: the emulated
    /// device only (for kernels kept outside `kernels/`, such as deliberately broken ones).
    pub fn launch_source(
        &self,
        name: &str,
        cuda: &str,
        entry: &str,
        grid: Grid,
        args: &[Arg],
    ) -> Result<()> {
        let Dev::Emu(e) = &self.dev else {
            bail!("launching kernels from text needs the emulated device");
        };
        let m = e.module_from_source(name, cuda)?;
        check_grid(entry, &grid, m.max_threads(entry))?;
        if self.recorded(entry, || Ok((Some(m.clone()), grid, args)))? {
            return Ok(());
        }
        Self::emu_launch(e, &m, entry, grid, args)
    }

    /// Bytes of every buffer made on this device so far, freed ones included: what a piece of work
    /// allocated is the difference across it.
    pub fn allocated_bytes(&self) -> u64 {
        self.counts.allocated.load(Ordering::Relaxed)
    }

    /// Buffers made on this device so far (uploads included), freed ones included.
    pub fn buffers_made(&self) -> u64 {
        self.counts.buffers.load(Ordering::Relaxed)
    }

    /// The device's memory in bytes: a GPU's, or the emulated device's when `PGSRM_EMU_MEMORY`
    /// gives it one.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory
    }

    /// Says that several threads will use the device at once (runs trained side by side): from
    /// now on nothing is recorded as a graph (`records_graphs`).
    pub fn share_between_threads(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// Whether work may be recorded as graphs: not on a device several threads share.
    pub fn records_graphs(&self) -> bool {
        !self.shared.load(Ordering::Relaxed)
    }

    /// The launches asked of this device so far (`LaunchCounts`).
    pub fn launch_counts(&self) -> LaunchCounts {
        LaunchCounts {
            kernels: self.counts.kernels.load(Ordering::Relaxed),
            graphs: self.counts.graphs.load(Ordering::Relaxed),
            copies: self.counts.copies.load(Ordering::Relaxed),
            memsets: self.counts.memsets.load(Ordering::Relaxed),
        }
    }

    /// The emulated device's module of `kernels/<file>`; `None` on a GPU.
    fn emu_module(&self, file: &'static str) -> Result<Option<Arc<emu::Module>>> {
        match &self.dev {
            Dev::Emu(e) => e.module(file).map(Some),
            Dev::Cuda(_) => Ok(None),
        }
    }

    /// During a capture: refuses a launch from another thread, and on the emulated device records
    /// the launch instead of running it (true). A GPU records through its stream, so it runs on.
    /// Outside a capture, counts the launch.
    fn recorded<'a>(
        &self,
        entry: &str,
        launch: impl FnOnce() -> Result<(Option<Arc<emu::Module>>, Grid, &'a [Arg])>,
    ) -> Result<bool> {
        let mut guard = self.capture.lock().unwrap();
        let Some(cap) = guard.as_mut() else {
            self.counts.kernels.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        };
        if cap.thread != std::thread::current().id() {
            bail!("launching {entry}: the device is recording a graph on another thread");
        }
        let (module, grid, args) = launch()?;
        let Some(module) = module else {
            return Ok(false);
        };
        cap.launches.push(EmuLaunch {
            module,
            entry: entry.to_string(),
            grid,
            args: args.iter().map(|a| a.bytes()).collect(),
        });
        Ok(true)
    }

    /// Fails when a graph is being recorded: only kernel launches go into a graph, so memory is
    /// made, copied and read before or after (`what` says which was tried).
    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.capture.lock().unwrap().is_some() {
            bail!(
                "{what} while the device records a graph: a graph holds kernel launches only, so \
                 buffers are made and written before it is recorded or replayed"
            );
        }
        Ok(())
    }

    /// Records the kernels `launches` launches as a graph, without running them on the emulated
    /// device (a GPU's capture does not run them either). Nothing else may touch the device
    /// meanwhile: no allocation, copy or wait, and no launch from another thread.
    pub fn capture(&self, launches: impl FnOnce() -> Result<()>) -> Result<Graph> {
        {
            let mut guard = self.capture.lock().unwrap();
            if guard.is_some() {
                bail!("a graph is already being recorded on this device");
            }
            *guard = Some(Capture {
                thread: std::thread::current().id(),
                launches: Vec::new(),
            });
        }
        {
            let mut s = self.scratch.lock().unwrap();
            s.floats.in_graph = true;
            s.counters.in_graph = true;
        }
        if let Dev::Cuda(d) = &self.dev {
            let begun = d
                .stream
                .begin_capture(
                    cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                )
                .map_err(|e| anyhow!("starting a graph capture: {e:?}"));
            if let Err(e) = begun {
                *self.capture.lock().unwrap() = None;
                return Err(e);
            }
        }
        let ran = launches();
        let cap = self
            .capture
            .lock()
            .unwrap()
            .take()
            .expect("the capture begun above");
        let graph = match &self.dev {
            Dev::Cuda(d) => {
                let ended = d
                    .stream
                    .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
                    .map_err(|e| anyhow!("ending a graph capture: {e:?}"));
                ran?;
                let g = ended?.ok_or_else(|| anyhow!("the capture recorded no graph"))?;
                GraphInner::Cuda(g)
            }
            Dev::Emu(_) => {
                ran?;
                GraphInner::Emu(cap.launches)
            }
        };
        let launches = match &graph {
            GraphInner::Emu(l) => l.len(),
            GraphInner::Cuda(g) => cuda_graph_nodes(g),
        };
        Ok(Graph {
            inner: graph,
            launches,
        })
    }

    /// Runs a graph this device recorded.
    pub fn replay(&self, graph: &Graph) -> Result<()> {
        self.not_capturing("replaying a graph")?;
        self.counts.graphs.fetch_add(1, Ordering::Relaxed);
        match (&self.dev, &graph.inner) {
            (Dev::Cuda(_), GraphInner::Cuda(g)) => {
                g.launch().map_err(|e| anyhow!("launching a graph: {e:?}"))
            }
            (Dev::Emu(e), GraphInner::Emu(launches)) => {
                for l in launches {
                    e.launch(
                        &l.module,
                        &l.entry,
                        l.grid.blocks,
                        l.grid.threads,
                        l.grid.shared_bytes as usize,
                        &l.args,
                    )?;
                }
                Ok(())
            }
            _ => bail!("a graph of one device replayed on another"),
        }
    }

    fn emu_launch(
        e: &EmuDevice,
        m: &emu::Module,
        entry: &str,
        grid: Grid,
        args: &[Arg],
    ) -> Result<()> {
        let bytes: Vec<ArgBytes> = args.iter().map(|a| a.bytes()).collect();
        e.launch(
            m,
            entry,
            grid.blocks,
            grid.threads,
            grid.shared_bytes as usize,
            &bytes,
        )
    }

    /// A buffer of `n` elements whose contents are not set: on the emulated device, filled with
    /// the poison byte, so a kernel that reads what nobody wrote shows it.
    pub fn alloc<T: DevElem>(&self, n: usize) -> Result<DevBuf<T>> {
        self.not_capturing("allocating a buffer")?;
        match &self.dev {
            Dev::Cuda(d) => {
                self.count_bytes::<T>(n);
                // SAFETY: the memory is uninitialised; every user writes before it reads, which
                // the emulated device's poisoning checks.
                let s = unsafe { d.stream.alloc::<T>(n) }.map_err(|e| alloc_error::<T>(n, e))?;
                Ok(Self::wrap_cuda(d, s, n))
            }
            Dev::Emu(e) => {
                let b = self.zeros::<T>(n)?;
                // SAFETY: the allocation holds n elements.
                unsafe { std::ptr::write_bytes(b.addr as *mut u8, e.poison(), n * size_of::<T>()) };
                Ok(b)
            }
        }
    }

    fn count_bytes<T>(&self, n: usize) {
        let bytes = (n * size_of::<T>()) as u64;
        self.counts.allocated.fetch_add(bytes, Ordering::Relaxed);
        self.counts.buffers.fetch_add(1, Ordering::Relaxed);
    }

    fn wrap_cuda<T: DevElem>(d: &Driver, s: CudaSlice<T>, n: usize) -> DevBuf<T> {
        let addr = s.device_ptr(&d.stream).0;
        DevBuf {
            len: n,
            addr,
            mem: Mem::Cuda(s),
        }
    }

    pub fn zeros<T: DevElem>(&self, n: usize) -> Result<DevBuf<T>> {
        self.not_capturing("allocating a buffer")?;
        self.count_bytes::<T>(n);
        match &self.dev {
            Dev::Cuda(d) => {
                let s = d
                    .stream
                    .alloc_zeros(n)
                    .map_err(|e| alloc_error::<T>(n, e))?;
                Ok(Self::wrap_cuda(d, s, n))
            }
            Dev::Emu(e) => {
                let m = e.alloc(n * size_of::<T>(), align_of::<T>())?;
                Ok(DevBuf {
                    len: n,
                    addr: m.addr(),
                    mem: Mem::Emu(m, PhantomData),
                })
            }
        }
    }

    pub fn upload<T: DevElem>(&self, host: &[T]) -> Result<DevBuf<T>> {
        self.not_capturing("copying to the device")?;
        match &self.dev {
            Dev::Cuda(d) => {
                self.count_bytes::<T>(host.len());
                let s = d
                    .stream
                    .clone_htod(host)
                    .map_err(|e| anyhow!("copy to device: {e:?}"))?;
                Ok(Self::wrap_cuda(d, s, host.len()))
            }
            Dev::Emu(_) => {
                let mut b = self.zeros::<T>(host.len())?;
                self.write(&mut b, host)?;
                Ok(b)
            }
        }
    }

    /// `host` on the device, in `old` when it holds at least as many elements (written at its
    /// start; its length stays what it was, so readers are given the length filled), else in a
    /// buffer made for it: inputs that change at every call but not in size allocate nothing.
    pub fn upload_reusing<T: DevElem>(
        &self,
        old: Option<DevBuf<T>>,
        host: &[T],
    ) -> Result<DevBuf<T>> {
        match old {
            Some(mut b) if b.len >= host.len() && !host.is_empty() => {
                self.write(&mut b, host)?;
                Ok(b)
            }
            _ => self.upload(host),
        }
    }

    /// Copies `host` into the start of `buf`.
    pub fn write<T: DevElem>(&self, buf: &mut DevBuf<T>, host: &[T]) -> Result<()> {
        if host.len() > buf.len {
            bail!(
                "copy to device: {} values into a buffer of {}",
                host.len(),
                buf.len
            );
        }
        self.not_capturing("copying to the device")?;
        match (&self.dev, &mut buf.mem) {
            (Dev::Cuda(d), Mem::Cuda(s)) => {
                let mut view = s.slice_mut(0..host.len());
                d.stream
                    .memcpy_htod(host, &mut view)
                    .map_err(|e| anyhow!("copy to device: {e:?}"))
            }
            (Dev::Emu(_), Mem::Emu(m, _)) => {
                let bytes: &[u8] = bytemuck::cast_slice(host);
                // SAFETY: the buffer holds at least host.len() elements (checked above).
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), m.addr() as *mut u8, bytes.len())
                };
                Ok(())
            }
            _ => bail!("a buffer of one device used on another"),
        }
    }

    /// Sets every element of `buf` to zero (gradients and other buffers that kernels add into).
    pub fn zero<T: DevElem>(&self, buf: &mut DevBuf<T>) -> Result<()> {
        self.not_capturing("zeroing a buffer")?;
        self.counts.memsets.fetch_add(1, Ordering::Relaxed);
        match (&self.dev, &mut buf.mem) {
            (Dev::Cuda(d), Mem::Cuda(s)) => d
                .stream
                .memset_zeros(s)
                .map_err(|e| anyhow!("zeroing a device buffer: {e:?}")),
            (Dev::Emu(_), Mem::Emu(m, _)) => {
                // SAFETY: the buffer holds buf.len elements.
                unsafe { std::ptr::write_bytes(m.addr() as *mut u8, 0, buf.len * size_of::<T>()) };
                Ok(())
            }
            _ => bail!("a buffer of one device used on another"),
        }
    }

    /// Copies `n` elements of `src` from index `src_at` into `dst` at index `dst_at`, device to
    /// device.
    pub fn copy<T: DevElem>(
        &self,
        dst: &mut DevBuf<T>,
        dst_at: usize,
        src: &DevBuf<T>,
        src_at: usize,
        n: usize,
    ) -> Result<()> {
        if dst_at + n > dst.len || src_at + n > src.len {
            bail!(
                "device copy of {n} values from {src_at} of {} to {dst_at} of {}",
                src.len,
                dst.len
            );
        }
        self.not_capturing("copying on the device")?;
        self.counts.copies.fetch_add(1, Ordering::Relaxed);
        match (&self.dev, &mut dst.mem, &src.mem) {
            (Dev::Cuda(d), Mem::Cuda(a), Mem::Cuda(b)) => d
                .stream
                .memcpy_dtod(
                    &b.slice(src_at..src_at + n),
                    &mut a.slice_mut(dst_at..dst_at + n),
                )
                .map_err(|e| anyhow!("device copy: {e:?}")),
            (Dev::Emu(_), Mem::Emu(a, _), Mem::Emu(b, _)) => {
                // SAFETY: both ranges lie inside their buffers (checked above); `copy` allows
                // them to overlap.
                unsafe {
                    std::ptr::copy(
                        (b.addr() as *const T).add(src_at),
                        (a.addr() as *mut T).add(dst_at),
                        n,
                    )
                };
                Ok(())
            }
            _ => bail!("a buffer of one device used on another"),
        }
    }

    pub fn download<T: DevElem>(&self, buf: &DevBuf<T>) -> Result<Vec<T>> {
        self.not_capturing("copying from the device")?;
        match (&self.dev, &buf.mem) {
            (Dev::Cuda(d), Mem::Cuda(s)) => d
                .stream
                .clone_dtoh(s)
                .map_err(|e| anyhow!("copy from device: {e:?}")),
            (Dev::Emu(_), Mem::Emu(m, _)) => {
                let mut out = vec![T::default(); buf.len];
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
                // SAFETY: the buffer holds buf.len elements.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        m.addr() as *const u8,
                        bytes.as_mut_ptr(),
                        bytes.len(),
                    )
                };
                Ok(out)
            }
            _ => bail!("a buffer of one device used on another"),
        }
    }

    /// Runs `f` with the device's scratch buffer, at least `n` floats long, whose contents are
    /// not set, and at least `counters` counters, all zero, which `f`'s kernels must leave zero.
    /// Everything runs on one stream in order, so the kernels one call launches are done with
    /// the buffers before the next call's kernels touch them; a buffer outgrown is freed in stream
    /// order too, unless a graph was recorded with it. While a graph is recorded the buffers
    /// cannot grow: run the same launches once before recording them.
    pub fn with_scratch<R>(
        &self,
        n: usize,
        counters: usize,
        f: impl FnOnce(&mut DevBuf<f32>, &mut DevBuf<u32>) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self.scratch.lock().unwrap();
        let s = &mut *guard;
        let floats = s.floats.at_least(n, |n| self.alloc(n))?;
        let counters = s.counters.at_least(counters, |n| self.zeros(n))?;
        f(floats, counters)
    }

    /// A buffer of NaNs, so that an element a kernel fails to write shows up in a comparison.
    pub fn poisoned(&self, n: usize) -> Result<DevBuf<f32>> {
        self.upload(&vec![f32::NAN; n])
    }

    /// Waits for the device; an asynchronous kernel fault surfaces here. (The emulated device
    /// runs each launch to completion, so there is nothing to wait for.)
    pub fn sync(&self) -> Result<()> {
        self.not_capturing("waiting for the device")?;
        match &self.dev {
            Dev::Cuda(d) => d
                .stream
                .synchronize()
                .map_err(|e| anyhow!("CUDA stream failed: {e:?}"))
                .context("after a kernel launch"),
            Dev::Emu(_) => Ok(()),
        }
    }
}

/// Sets the stream-ordered pool's release threshold to its maximum, so memory freed between
/// updates stays with the pool instead of going back to the driver at every synchronisation.
fn keep_freed_memory(ctx: &CudaContext) -> Result<()> {
    use cudarc::driver::{result, sys};
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let mut threshold: u64 = u64::MAX;
    // SAFETY: the device comes from the context just made, and the attribute takes a u64.
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device())
            .map_err(|e| anyhow!("the device's memory pool: {e:?}"))?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .map_err(|e| anyhow!("setting the memory pool's release threshold: {e:?}"))
    }
}

/// The nodes of a recorded CUDA graph (its kernel launches, as the stream recorded them).
fn cuda_graph_nodes(g: &cudarc::driver::CudaGraph) -> usize {
    let mut n: usize = 0;
    // SAFETY: the graph is alive; a null node array asks for the count only.
    let r =
        unsafe { cudarc::driver::sys::cuGraphGetNodes(g.cu_graph(), std::ptr::null_mut(), &mut n) };
    if r == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        n
    } else {
        0
    }
}

/// What a failed CUDA allocation of `n` elements of `T` says: the elements, the bytes, the driver.
fn alloc_error<T>(n: usize, e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!(
        "allocating {n} elements ({} bytes): {e:?}",
        n * size_of::<T>()
    )
}
