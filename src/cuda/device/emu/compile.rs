//! Building the emulated device's libraries with the system's C++ compiler: the runtime, and one
//! module per file of `kernels/` (the same sources NVRTC compiles, with `cuda_emu.h` in front and
//! a trampoline per kernel behind). Libraries are cached under `$PGSRM_HOME/emu/`, keyed by the
//! sources, the compiler's version and the machine's CPU (modules are built for `-march=native`).

use crate::cuda::device::registry;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

pub const HEADER: &str = include_str!("cuda_emu.h");
pub const RUNTIME: &str = include_str!("runtime.cpp");

/// A kernel entry point of a module: its name and its `__launch_bounds__` limit, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDecl {
    pub name: String,
    pub max_threads: Option<u32>,
}

/// The C++ compiler: `$CXX`, else `c++`, with its version line (part of every cache key).
#[derive(Clone, Debug)]
pub struct Compiler {
    pub program: String,
    pub version: String,
}

impl Compiler {
    pub fn find() -> Result<Compiler> {
        let from_env = std::env::var("CXX").ok().filter(|s| !s.trim().is_empty());
        let program = from_env.clone().unwrap_or_else(|| "c++".to_string());
        let out = Command::new(&program).arg("--version").output();
        match out {
            Ok(o) if o.status.success() => Ok(Compiler {
                version: String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
                program,
            }),
            other => {
                let why = match other {
                    Ok(o) => format!("`{program} --version` exited with {}", o.status),
                    Err(e) => format!("`{program}` could not be run: {e}"),
                };
                let looked = match from_env {
                    Some(v) => format!("CXX is set to {v:?}"),
                    None => "CXX is not set, so `c++` was looked for on the PATH".to_string(),
                };
                bail!(
                    "the emulated device needs a C++ compiler and found none: {looked}; {why}. \
                     Install one (e.g. g++ or clang++) or point CXX at it"
                )
            }
        }
    }
}

/// The machine's CPU, as `-march=native` sees it: its model and feature flags.
fn machine_id() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let pick = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or("")
            .to_string()
    };
    format!(
        "{} {} {}",
        std::env::consts::ARCH,
        pick("model name"),
        pick("flags")
    )
}

const FLAGS: &[&str] = &[
    "-std=gnu++17",
    "-O2",
    // Line tables, so gdb and perf can place a kernel's instructions on its source lines.
    "-g1",
    "-march=native",
    // The GPU fuses multiplies and adds by default; so does the emulated device.
    "-ffp-contract=fast",
    "-fPIC",
    "-shared",
    "-pthread",
    "-w",
];

/// Builds (or finds in the cache) the library for `source`, named `stem`; `what` names it in errors.
pub fn build(compiler: &Compiler, stem: &str, source: &str, what: &str) -> Result<PathBuf> {
    let key = registry::fnv1a(&[
        source.as_bytes(),
        compiler.program.as_bytes(),
        compiler.version.as_bytes(),
        FLAGS.join(" ").as_bytes(),
        machine_id().as_bytes(),
    ]);
    let dir = crate::assets::cache_dir().join("emu");
    let lib = dir.join(format!("{stem}-{key:016x}.so"));
    if lib.is_file() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The source stays beside the library, so a compiler message can be read against it.
    let src = dir.join(format!("{stem}-{key:016x}.cpp"));
    crate::files::write_atomic(&src, source.as_bytes())?;
    // A name of its own per build: threads and processes may build the same library at once.
    let tmp = crate::files::temp_sibling(&lib, "build");
    let out = Command::new(&compiler.program)
        .args(FLAGS)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .output()
        .with_context(|| format!("running {}", compiler.program))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "{} failed to compile {what} for the emulated device ({}):\n{}",
            compiler.program,
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    std::fs::rename(&tmp, &lib).with_context(|| format!("renaming into {}", lib.display()))?;
    Ok(lib)
}

fn header_text() -> String {
    // `#pragma once` means nothing in the file the header is pasted into.
    format!(
        "#line 1 \"pgsrm-emu/cuda_emu.h\"\n{}",
        HEADER.replacen("#pragma once", "", 1)
    )
}

/// The runtime's source: the header, then runtime.cpp. With `PGSRM_EMU_UCONTEXT` set, fibers
/// switch through ucontext, as on machines other than x86-64, so that path can be tried anywhere.
pub fn runtime_source() -> String {
    let portable = if std::env::var_os("PGSRM_EMU_UCONTEXT").is_some() {
        "#define EMU_UCONTEXT\n"
    } else {
        ""
    };
    format!(
        "#define EMU_RUNTIME\n{portable}{}\n#line 1 \"pgsrm-emu/runtime.cpp\"\n{RUNTIME}",
        header_text()
    )
}

/// A kernel file's module source and its kernels: the header, the file as NVRTC gets it (headers
/// pasted, `extern __shared__` arrays pointed at the block's dynamic shared memory), then a
/// trampoline and a signature function per kernel.
pub fn module_source(file: &str) -> Result<(String, Vec<KernelDecl>)> {
    let cuda = registry::source(file)?;
    module_source_from(&cuda)
}

/// `module_source` for a source given as text (kernel files outside `kernels/`, such as tests').
pub fn module_source_from(cuda: &str) -> Result<(String, Vec<KernelDecl>)> {
    let kernels = kernel_decls(cuda)?;
    let mut s = header_text();
    s.push('\n');
    s.push_str(&dynamic_shared_rewritten(cuda));
    s.push_str("\n#line 1 \"pgsrm-emu/trampolines\"\n");
    for k in &kernels {
        let n = &k.name;
        s.push_str(&format!(
            "extern \"C\" void emu_k_{n}(void** a) {{ ::emu::invoke({n}, a); }}\n\
             extern \"C\" const unsigned* emu_sig_{n}(unsigned* n) {{ return ::emu::signature({n}, n); }}\n"
        ));
    }
    Ok((s, kernels))
}

/// The text with comments blanked out (line breaks kept), so scans see code only.
fn without_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && i + 1 < b.len() && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            // Strings are kept whole (`extern "C"` is code).
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.push_str(&src[start..i]);
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Every `__global__` function of a source: its name and launch bound. Kernels must be
/// `extern "C"`, as the host looks them up by name.
pub fn kernel_decls(src: &str) -> Result<Vec<KernelDecl>> {
    let code = without_comments(src);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("__global__") {
        let start = from + at;
        from = start + "__global__".len();
        if is_ident_char(code[..start].chars().last()) || is_ident_char(code[from..].chars().next())
        {
            continue;
        }
        // The declaration runs to the parameter list's `(`; `__launch_bounds__(...)` may precede it.
        let mut rest = &code[from..];
        let mut max_threads = None;
        let name = loop {
            let open = rest
                .find('(')
                .context("a __global__ declaration without a parameter list")?;
            let before = rest[..open].trim_end();
            let ident_start = before
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let ident = &before[ident_start..];
            if ident == "__launch_bounds__" {
                let close = rest[open..]
                    .find(')')
                    .context("unclosed __launch_bounds__")?;
                let first = rest[open + 1..open + close].split(',').next().unwrap_or("");
                max_threads = first.trim().parse::<u32>().ok();
                rest = &rest[open + close + 1..];
                continue;
            }
            break ident.to_string();
        };
        let line_start = code[..start].rfind(['\n', ';', '}']).map_or(0, |i| i + 1);
        if !code[line_start..start].contains("extern \"C\"") {
            bail!(
                "kernel {name} is not declared extern \"C\": the host finds kernels by their plain names"
            );
        }
        out.push(KernelDecl { name, max_threads });
    }
    Ok(out)
}

fn is_ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// `extern __shared__ T name[];` becomes a pointer to the block's dynamic shared memory: a local
/// constant inside a function, a macro at file scope. Each replacement keeps to its line, so the
/// `#line` numbering stays right.
fn dynamic_shared_rewritten(src: &str) -> String {
    let code = without_comments(src);
    let mut depth = 0i32;
    let mut out = String::with_capacity(src.len());
    for (line, code_line) in src.lines().zip(code.lines()) {
        let t = code_line.trim();
        let decl = t
            .strip_prefix("extern")
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix("__shared__"))
            .and_then(|r| r.trim().strip_suffix(';'))
            .and_then(|r| r.trim_end().strip_suffix("[]"));
        match decl {
            Some(d) => {
                let d = d.trim();
                let cut = d
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(0, |i| i + 1);
                let (ty, name) = (d[..cut].trim(), &d[cut..]);
                // `__align__(n)` says nothing here: the dynamic buffer is aligned for any type.
                let ty = match ty.find("__align__") {
                    Some(i) => {
                        let close = ty[i..].find(')').map_or(ty.len(), |j| i + j + 1);
                        format!("{} {}", &ty[..i], &ty[close..])
                    }
                    None => ty.to_string(),
                };
                let ty = ty.trim();
                if depth > 0 {
                    out.push_str(&format!(
                        "{ty}* const {name} = reinterpret_cast<{ty}*>(emu_dynamic_shared());"
                    ));
                } else {
                    out.push_str(&format!(
                        "#define {name} (reinterpret_cast<{ty}*>(emu_dynamic_shared()))"
                    ));
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
        for c in code_line.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
    }
    out
}

/// Where a built library is loaded from; also what `pgsrm info` shows.
pub fn cache_dir() -> PathBuf {
    crate::assets::cache_dir().join("emu")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kernels_and_their_launch_bounds() {
        let src = "// a __global__ in a comment\n\
                   extern \"C\" __global__ void __launch_bounds__(256, 2) mm(float* o) {}\n\
                   extern \"C\" __global__ void plain(int n) { /* __global__ */ }\n";
        let k = kernel_decls(src).unwrap();
        assert_eq!(
            k,
            [
                KernelDecl {
                    name: "mm".into(),
                    max_threads: Some(256)
                },
                KernelDecl {
                    name: "plain".into(),
                    max_threads: None
                }
            ]
        );
        let e = kernel_decls("__global__ void k() {}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("extern \"C\""), "{e}");
    }

    #[test]
    fn dynamic_shared_memory_keeps_the_line_count() {
        let src = "extern __shared__ float top[];\nvoid f() {\n  extern __shared__ __align__(16) int buf[];\n}\n";
        let out = dynamic_shared_rewritten(src);
        assert_eq!(out.lines().count(), src.lines().count());
        assert!(out.contains("#define top (reinterpret_cast<float*>(emu_dynamic_shared()))"));
        assert!(out.contains("int* const buf = reinterpret_cast<int*>(emu_dynamic_shared());"));
    }
}
