//! `--device emu` against `--device cpu` on the commands that run models: greedy `generate` gives
//! the same tokens with log-probabilities within 1e-4 on a GPT-2 checkpoint and on
//! SmolLM2-135M-Instruct, `score` agrees within 1e-4, and `embed` (MiniLM) within 1e-5.

use serde_json::Value;
use std::process::Command;

fn pgsrm(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgsrm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Greedy generation on both backends: the same ids, log-probabilities within 1e-4.
fn same_greedy(model: &str, prompt: &str, new_tokens: &str) {
    let run = |device| {
        pgsrm(&[
            "generate",
            "--model",
            model,
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "--max-new-tokens",
            new_tokens,
            "--json",
            "--device",
            device,
        ])
    };
    let (cpu, emu) = (run("cpu"), run("emu"));
    assert_eq!(cpu["device"], "cpu");
    assert!(
        emu["device"]
            .as_str()
            .unwrap()
            .starts_with("emulated device")
    );
    let (c, e) = (&cpu["samples"][0], &emu["samples"][0]);
    assert_eq!(c["ids"], e["ids"], "{model}: the tokens differ");
    assert!(!c["ids"].as_array().unwrap().is_empty());
    let d = max_diff(&floats(&c["logprobs"]), &floats(&e["logprobs"]));
    assert!(d <= 1e-4, "{model}: log-probabilities differ by {d}");
}

#[test]
fn greedy_generation_on_a_gpt2_checkpoint_agrees() {
    let dir = std::env::temp_dir().join(format!("pgsrm-cli-device-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(["convert", "--model", "random:tiny:5", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    same_greedy(
        dir.to_str().unwrap(),
        "Mix the two colors: red and blue is",
        "8",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn greedy_generation_of_smollm2_agrees() {
    same_greedy("smollm2-135m-instruct", "The capital of France is", "4");
}

#[test]
fn scores_agree() {
    for model in ["random:tiny:3", "smollm2-135m-instruct"] {
        let run = |device| {
            pgsrm(&[
                "score",
                "--model",
                model,
                "--text",
                "The opposite of hot is cold.",
                "--device",
                device,
            ])
        };
        let (cpu, emu) = (run("cpu"), run("emu"));
        assert_eq!(cpu["ids"], emu["ids"]);
        let (c, e) = (floats(&cpu["logprobs"]), floats(&emu["logprobs"]));
        // A token with no context (the first, without a start token) is null on both.
        let scored = |v: &[f64]| v.iter().map(|x| !x.is_nan()).collect::<Vec<_>>();
        assert_eq!(scored(&c), scored(&e));
        assert!(scored(&c).iter().filter(|&&s| s).count() >= 6, "{cpu}");
        let pick = |v: &[f64]| {
            v.iter()
                .copied()
                .filter(|x| !x.is_nan())
                .collect::<Vec<_>>()
        };
        let d = max_diff(&pick(&c), &pick(&e));
        assert!(d <= 1e-4, "{model}: scores differ by {d}");
    }
}

#[test]
fn minilm_embeddings_agree_within_1e_5() {
    let texts = [
        "red",
        "a deep shade of purple",
        "",
        "The cat sat on the mat, then it left.",
    ];
    let run = |device| {
        let mut args = vec!["embed", "--device", device, "--text"];
        args.extend(texts);
        pgsrm(&args)
    };
    let (cpu, emu) = (run("cpu"), run("emu"));
    let n = cpu["vectors"].as_array().unwrap().len();
    assert_eq!(n, texts.len());
    for i in 0..n {
        let (c, e) = (
            floats(&cpu["vectors"][i]["vector"]),
            floats(&emu["vectors"][i]["vector"]),
        );
        assert_eq!(c.len(), 384);
        let d = max_diff(&c, &e);
        assert!(d <= 1e-5, "text {i}: vectors differ by {d}");
    }
    // Only the sentence encoders run on a device.
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args([
            "embed",
            "--embedder",
            "static",
            "--device",
            "emu",
            "--text",
            "red",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--device emu"));
}
