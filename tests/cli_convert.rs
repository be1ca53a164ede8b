//! `pgsrm convert` writes folders that load back with the same numbers, for both families.

use std::path::Path;
use std::process::Command;

fn pgsrm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(args)
        .output()
        .expect("run pgsrm")
}

fn score(model: &str, text: &str) -> serde_json::Value {
    let out = pgsrm(&["score", "--model", model, "--text", text]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pgsrm-convert-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn converted_models_score_as_the_originals() {
    for (tag, model) in [
        ("gpt2", "random:tiny:9"),
        ("llama", "smollm2-135m-instruct"),
    ] {
        let dir = tmpdir(tag);
        let out_dir = dir.join("model");
        let o = out_dir.to_str().unwrap();
        let out = pgsrm(&["convert", "--model", model, "--out", o]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(Path::new(o).join(f).is_file(), "{tag}: {f} missing");
        }
        let text = "The opposite of 'hot' is cold.";
        let (a, b) = (score(model, text), score(o, text));
        assert_eq!(a["ids"], b["ids"], "{tag}: token ids");
        assert_eq!(
            a["logprobs"], b["logprobs"],
            "{tag}: the saved weights are the loaded ones, bit for bit"
        );
        let again = pgsrm(&["convert", "--model", model, "--out", o]);
        assert!(
            !again.status.success(),
            "an existing folder is not replaced without --force"
        );
        assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
