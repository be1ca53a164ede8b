//! The `pgsrm` binary: `info`, `--help` everywhere, and bad `--model` input giving a clear message
//! and a non-zero exit.

mod io_util;

use io_util::TempDir;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::io::save_gpt2;
use std::process::{Command, Output};

/// Run the binary with its caches inside `root` and no hub, so nothing outside the test is used.
fn pgsrm(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(args)
        .env("PGSRM_HOME", root.join("pgsrm"))
        .env("HF_HUB_CACHE", root.join("hf"))
        .env("HF_HOME", root.join("hf-home"))
        .env_remove("HF_ENDPOINT")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn info_reports_version_threads_cuda_and_cache() {
    let tmp = TempDir::new("cli-info");
    let out = pgsrm(tmp.path(), &["info", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["threads"].as_u64().unwrap() >= 1);
    assert!(v["cuda"]["driver"].is_boolean());
    // The emulated device's compiler (the tests build with one, so there is one).
    assert!(v["emulated_device"]["compiler"].is_string(), "{v}");
    assert_eq!(v["cache"], tmp.join("pgsrm").display().to_string());
    assert_eq!(v["hf_caches"][0], tmp.join("hf").display().to_string());
    assert_eq!(v["assets"].as_array().unwrap().len(), 3);

    let out = pgsrm(tmp.path(), &["info"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(
        s.starts_with(&format!("pgsrm {}", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains("threads: ") && s.contains("cuda: "), "{s}");
    assert!(
        s.contains("emulated device (--device emu): built by "),
        "{s}"
    );
}

#[test]
fn every_subcommand_has_help() {
    let tmp = TempDir::new("cli-help");
    let out = pgsrm(tmp.path(), &["--help"]);
    assert!(out.status.success());
    let top = text(&out.stdout);
    let subs: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subs.contains(&"info") && subs.len() >= 3, "{top}");
    for sub in subs {
        let out = pgsrm(tmp.path(), &[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(text(&out.stdout).contains("Usage: pgsrm"), "{sub}");
    }
    let out = pgsrm(tmp.path(), &["info", "--no-such-flag"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--no-such-flag"));
}

/// Expect failure with every `wants` in stderr.
fn fails_with(root: &std::path::Path, model: &str, wants: &[&str]) {
    let out = pgsrm(root, &["info", "--model", model]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "--model {model} succeeded");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in wants {
        assert!(err.contains(w), "missing '{w}' in: {err}");
    }
}

#[test]
fn model_specs_load_or_fail_clearly() {
    let tmp = TempDir::new("cli-model");
    let root = tmp.path();
    fails_with(
        root,
        "random:huge",
        &["unknown config 'huge'", "tiny, small, medium, large, xl"],
    );
    fails_with(root, "random:tiny:x", &["seed 'x'"]);
    fails_with(
        root,
        "./no/such/dir",
        &["no/such/dir", "no such file or folder"],
    );
    fails_with(
        root,
        "gpt2",
        &["cannot find gpt2", "HF_ENDPOINT is not set", "models--gpt2"],
    );

    // A saved checkpoint loads; the GPT-2 tokenizer is fetched on first use, announced on stderr.
    let dir = tmp.join("ckpt");
    save_gpt2(
        &Gpt2::random(Gpt2Config::named("tiny").unwrap(), 1),
        &dir,
        None,
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let out = pgsrm(root, &["info", "--json", "--model", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("pgsrm: fetching gpt2-tokenizer"))
            .count(),
        1,
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"]["family"], "gpt2");
    assert_eq!(v["model"]["parameters"], 6_960_768);
    assert_eq!(v["model"]["tokenizer_vocab"], 50257);
    // Second time: cached, nothing fetched.
    let out = pgsrm(root, &["info", "--model", "random:tiny:7"]);
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("fetching"));

    // The same folder as a Hugging Face cache entry, found by its hub name.
    let snap = tmp.join("hf/models--org--tiny-gpt/snapshots/abc");
    std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
    std::fs::rename(&dir, &snap).unwrap();
    let out = pgsrm(root, &["info", "--json", "--model", "org/tiny-gpt"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["model"]["source"]
            .as_str()
            .unwrap()
            .contains("snapshots/abc")
    );
    let d = snap.to_str().unwrap();

    // Broken copies of it.
    let st = snap.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(root, d, &["model.safetensors", "truncated"]);
    std::fs::remove_file(&st).unwrap();
    fails_with(root, d, &["model.safetensors is missing"]);
    std::fs::write(snap.join("config.json"), "{\"n_embd\": ").unwrap();
    fails_with(root, d, &["config.json", "invalid JSON"]);
    std::fs::write(&st, &bytes).unwrap();
    let mut cfg = pgsrm::model::io::gpt2_config_json(&Gpt2Config::named("tiny").unwrap());
    cfg["n_layer"] = 3.into();
    std::fs::write(snap.join("config.json"), cfg.to_string()).unwrap();
    fails_with(root, d, &["missing tensor 'h.2.ln_1.weight'"]);
    cfg["n_layer"] = 2.into();
    cfg["n_positions"] = 512.into();
    std::fs::write(snap.join("config.json"), cfg.to_string()).unwrap();
    fails_with(
        root,
        d,
        &["'transformer.wpe.weight' has shape [1024, 128], expected [512, 128]"],
    );
}
