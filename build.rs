//! Embeds every file of `kernels/` in the binary, so the CUDA backend compiles them with NVRTC at
//! run time from any folder, and a changed kernel changes the binary (and its cache key).

use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("kernels/ folder")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
        .collect();
    names.sort();
    let mut out = String::from(
        "/// (file name, source) of every file in kernels/, sorted by name.\npub const KERNEL_FILES: &[(&str, &str)] = &[\n",
    );
    for n in &names {
        println!("cargo:rerun-if-changed=kernels/{n}");
        out.push_str(&format!(
            "    ({n:?}, include_str!({:?})),\n",
            dir.join(n).display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("kernel_files.rs");
    fs::write(dest, out).unwrap();
}
