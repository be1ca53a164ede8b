//! Writing files so that a crash or a second writer never leaves half of one: a temporary
//! sibling that no other writer picks, an atomic file write, and a folder moved into place whole.
//! Below every other module: checkpoints, caches, reports and kernels' builds all write this way.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A name for a temporary sibling of `path` that no other writer (thread or process) will pick.
pub fn temp_sibling(path: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = format!(".{base}.{tag}-{}-{n}-{nanos}", std::process::id());
    match path.parent() {
        Some(p) => p.join(name),
        None => PathBuf::from(name),
    }
}

/// Write a file so that readers see either the old contents or the new, never a part: write a
/// temporary sibling, flush it to disk, rename it over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path, "tmp");
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Move a complete folder to `dst`. A directory rename cannot replace a non-empty directory, so an
/// existing `dst` is first moved aside and removed once the new one is in place.
pub fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    let old = if dst.exists() {
        let old = temp_sibling(dst, "old");
        std::fs::rename(dst, &old)
            .with_context(|| format!("cannot move the old {} aside", dst.display()))?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(src, dst)
        .with_context(|| format!("cannot rename {} to {}", src.display(), dst.display()))?;
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}
