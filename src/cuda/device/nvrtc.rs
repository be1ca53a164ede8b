//! Finding NVRTC and the CUDA headers. `cudarc` opens `libnvrtc.so.12` by name; when the system has
//! none we open the library shipped in the Python wheel `nvidia-cuda-nvrtc-cu12` by its path first:
//! the dynamic loader then resolves cudarc's request by soname to the library already loaded.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Pinned wheels: NVRTC itself, and the runtime wheel whose `include/` holds `cuda_fp16.h`,
/// `cuda_bf16.h` and friends, which NVRTC does not carry.
pub const NVRTC_WHEEL: &str = "nvidia-cuda-nvrtc-cu12==12.9.86";
pub const RUNTIME_WHEEL: &str = "nvidia-cuda-runtime-cu12==12.9.79";

static LOADED: OnceLock<Result<(), String>> = OnceLock::new();

/// Makes NVRTC loadable, or explains what was tried.
pub fn ensure_loaded() -> Result<()> {
    LOADED
        .get_or_init(|| load().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn system_present() -> bool {
    // SAFETY: only opens the shared library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn load() -> Result<()> {
    if system_present() {
        return Ok(());
    }
    let mut tried = vec![
        "libnvrtc.so.12 through the system library path (LD_LIBRARY_PATH, ldconfig)".to_string(),
    ];
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("PGSRM_NVRTC") {
        candidates.push(PathBuf::from(p));
    }
    for dir in wheel_roots() {
        candidates.push(dir.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
    }
    for c in &candidates {
        tried.push(c.display().to_string());
        if c.is_file() && preload(c).is_ok() && system_present() {
            return Ok(());
        }
    }
    // Last, fetch the wheels into our own folder, as the other offline assets are fetched.
    let fetched = crate::assets::cache_dir().join("python");
    match install_wheels(&fetched) {
        Ok(()) => {
            let lib = fetched.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
            if preload(&lib).is_ok() && system_present() {
                return Ok(());
            }
            tried.push(format!(
                "{} (after installing the wheels there)",
                lib.display()
            ));
        }
        Err(e) => tried.push(format!(
            "python3 -m pip install --target {}: {e:#}",
            fetched.display()
        )),
    }
    bail!(
        "NVRTC (libnvrtc.so.12) not found; tried:\n  {}\nInstall it with `python3 -m pip install {NVRTC_WHEEL} {RUNTIME_WHEEL}` \
         (into any of the folders above), or point PGSRM_NVRTC at libnvrtc.so.12",
        tried.join("\n  ")
    )
}

/// `pip install --target` into a fresh folder beside `dest`, then renamed into place, so that two
/// processes installing at once never leave a half-written folder.
fn install_wheels(dest: &Path) -> Result<()> {
    if dest.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12").is_file() {
        return Ok(());
    }
    let parent = dest.parent().context("cache folder has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".python-{}", std::process::id()));
    eprintln!(
        "pgsrm: fetching NVRTC ({NVRTC_WHEEL}, {RUNTIME_WHEEL}) into {}",
        dest.display()
    );
    let out = std::process::Command::new(&crate::assets::Locations::from_env().python)
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&tmp)
        .args([NVRTC_WHEEL, RUNTIME_WHEEL])
        .output()
        .context("running python3 -m pip")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "pip failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if std::fs::rename(&tmp, dest).is_err() {
        // Another process finished first; its copy is as good as ours.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

fn preload(path: &Path) -> Result<()> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: libnvrtc has no initialisers with preconditions; the handle is kept for the process.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .with_context(|| format!("opening {}", path.display()))?;
    std::mem::forget(lib);
    Ok(())
}

/// Folders where pip puts wheels: our own (`$PGSRM_HOME/python`), the active virtual environment,
/// and the site-packages folders of `python3`.
pub fn wheel_roots() -> Vec<PathBuf> {
    let mut roots = vec![crate::assets::cache_dir().join("python")];
    if let Ok(v) = std::env::var("VIRTUAL_ENV") {
        roots.extend(site_packages(Path::new(&v)));
    }
    if let Ok(out) = std::process::Command::new(&crate::assets::Locations::from_env().python)
        .args(["-c", "import site, sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))"])
        .output()
    {
        roots.extend(String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from));
    }
    roots
}

fn site_packages(venv: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("site-packages"))
                .collect()
        })
        .unwrap_or_default()
}

/// Header folders for NVRTC: `$CUDA_HOME/include`, `/usr/local/cuda/include`, then the runtime wheel's.
pub fn include_paths() -> Vec<String> {
    let mut dirs = Vec::new();
    if let Ok(h) = std::env::var("CUDA_HOME") {
        dirs.push(PathBuf::from(h).join("include"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    for r in wheel_roots() {
        dirs.push(r.join("nvidia/cuda_runtime/include"));
    }
    dirs.into_iter()
        .filter(|d| d.join("cuda_fp16.h").is_file())
        .map(|d| d.display().to_string())
        .collect()
}

/// NVRTC's version, e.g. (12, 9).
pub fn version() -> Result<(i32, i32)> {
    ensure_loaded()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded; both pointers are valid for the call.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        bail!("nvrtcVersion failed: {r:?}");
    }
    Ok((major, minor))
}
