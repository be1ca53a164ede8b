//! The kernel registry: the sources of `kernels/` embedded in the binary (build.rs), compiled by
//! NVRTC for a device architecture on first use, and cached on disk under
//! `$PGSRM_HOME/kernels/`, keyed by the source's hash, the architecture and NVRTC's version.

use crate::cuda::device::nvrtc;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashSet;
use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/kernel_files.rs"));

/// The kernel files NVRTC compiles (headers are pasted into them).
pub fn kernel_files() -> impl Iterator<Item = &'static str> {
    KERNEL_FILES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.ends_with(".cu"))
}

fn raw_source(name: &str) -> Result<&'static str> {
    KERNEL_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            anyhow!(
                "no kernel file '{name}'; known: {}",
                KERNEL_FILES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The source of a kernel file with its `#include "x.cuh"` lines replaced by those files (each
/// once), since NVRTC gets one file and no header table.
pub fn source(name: &str) -> Result<String> {
    let mut seen = HashSet::new();
    inline(name, &mut seen)
}

fn inline(name: &str, seen: &mut HashSet<String>) -> Result<String> {
    if !seen.insert(name.to_string()) {
        return Ok(String::new());
    }
    // `#line` directives keep compiler messages pointing at the right file and line.
    let mut out = format!("#line 1 \"kernels/{name}\"\n");
    for (i, line) in raw_source(name)?.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("#include \"") {
            let header = rest.trim_end_matches('"');
            out.push_str(&inline(header, seen).with_context(|| format!("included from {name}"))?);
            out.push_str(&format!("#line {} \"kernels/{name}\"\n", i + 2));
        } else {
            // A blank line in place of `#pragma once` keeps the line numbers.
            out.push_str(if t == "#pragma once" { "" } else { line });
            out.push('\n');
        }
    }
    Ok(out)
}

/// FNV-1a, 64 bits: a cache key that is the same for every build and Rust version.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `compute_XY` for a device of compute capability (X, Y).
pub fn arch_for(major: i32, minor: i32) -> Result<&'static str> {
    Ok(match (major, minor) {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        _ => bail!("compute capability {major}.{minor} is not one we compile for"),
    })
}

/// Compiles one kernel file to PTX for `arch` (e.g. "compute_90"). A compile error carries NVRTC's
/// log, whose lines name the file and line.
pub fn compile(name: &str, arch: &'static str) -> Result<String> {
    nvrtc::ensure_loaded()?;
    let src = source(name)?;
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        include_paths: nvrtc::include_paths(),
        name: Some(name.to_string()),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(&src, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => {
            bail!(
                "NVRTC failed to compile kernels/{name} for {arch}:\n{}",
                log.to_string_lossy()
            )
        }
        Err(e) => bail!("NVRTC failed on kernels/{name} for {arch}: {e:?}"),
    }
}

fn cache_path(name: &str, arch: &str, src: &str) -> Result<PathBuf> {
    let (major, minor) = nvrtc::version()?;
    let key = fnv1a(&[
        src.as_bytes(),
        arch.as_bytes(),
        format!("{major}.{minor}").as_bytes(),
    ]);
    Ok(crate::assets::cache_dir().join("kernels").join(format!(
        "{}-{arch}-{key:016x}.ptx",
        name.trim_end_matches(".cu")
    )))
}

/// PTX of a kernel file for `arch`, from the disk cache or freshly compiled (and then cached,
/// written atomically so that concurrent processes never read half a file).
pub fn ptx(name: &str, arch: &'static str) -> Result<String> {
    let src = source(name)?;
    let path = cache_path(name, arch, &src)?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text);
    }
    let text = compile(name, arch)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming into {}", path.display()))?;
    }
    Ok(text)
}

/// The `extern "C" __global__` entry points a PTX text defines.
pub fn entry_points(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(".visible .entry ")
                .or_else(|| l.strip_prefix(".entry "))?;
            Some(rest.split(['(', ' ']).next()?.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_inlined_once_and_cache_keys_differ() {
        let s = source("attention.cu").unwrap();
        assert!(s.contains("__device__ float block_sum"));
        assert!(!s.lines().any(|l| l.trim_start().starts_with("#include")));
        assert_eq!(s.matches("__device__ float block_sum").count(), 1);
        assert_ne!(fnv1a(&[b"a", b"bc"]), fnv1a(&[b"ab", b"c"]));
        assert!(
            source("missing.cu")
                .unwrap_err()
                .to_string()
                .contains("matmul.cu")
        );
    }
}
