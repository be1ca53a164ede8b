//! `pgsrm train --device emu`: the whole run on the emulated device (rollouts, MiniLM rewards
//! with the fused kernel, the update, the optimisers) writes the CPU backend's metrics for the
//! same seed, the same bits again on repeat, continues a run a CPU checkpoint left, and records
//! the devices it ran on; a device that cannot be opened stops the run before its folder exists,
//! and one that runs out of memory stops it with its last checkpoint kept.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "pgsrm-cli-train-device-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn pgsrm(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsrm"));
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A run of 6 episodes per update on GPT-2 `tiny` with random weights, the PGSRM reward through
/// MiniLM (fetched by the asset code), checkpoints every 3 updates.
fn train(reward: &str, name: &str, episodes: u32, device: &str) -> Vec<String> {
    [
        "train",
        "--task",
        "colors",
        "--model",
        "random:tiny",
        "--reward",
        reward,
        "--batch-size",
        "6",
        "--checkpoint-every",
        "3",
        "--seed",
        "7",
        "--quiet",
        "--episodes",
        &episodes.to_string(),
        "--run-name",
        name,
        "--device",
        device,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The metrics lines without the wall-clock fields.
fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            m.remove("seconds").unwrap();
            m.remove("episodes_per_s").unwrap();
            // Where the update's time went: every phase measured, on every backend.
            let phases = m.remove("phase_seconds").unwrap();
            for k in ["rollout", "reward", "reference", "actor", "optimiser"] {
                assert!(phases[k].as_f64().is_some_and(|s| s >= 0.0), "{phases}");
            }
            assert!(phases["actor"].as_f64().unwrap() > 0.0, "{phases}");
            assert!(phases["rollout"].as_f64().unwrap() > 0.0, "{phases}");
            v
        })
        .collect()
}

/// Every number of `a` within `tol` (relative, absolute below 1) of the same place in `b`, and
/// everything else equal; the path of the first difference otherwise.
fn close(a: &Value, b: &Value, tol: f64, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() <= tol * x.abs().max(1.0) {
                Ok(())
            } else {
                Err(format!("{path}: {x} against {y}"))
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: different fields"));
            }
            for (k, v) in x {
                let w = y.get(k).ok_or(format!("{path}.{k}: missing"))?;
                close(v, w, tol, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: {} against {} items", x.len(), y.len()));
            }
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                close(v, w, tol, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} against {b}")),
    }
}

fn assert_close(a: &[Value], b: &[Value], tol: f64) {
    assert_eq!(a.len(), b.len(), "a different number of updates");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if let Err(e) = close(x, y, tol, &format!("update {}", i + 1)) {
            panic!("{e}");
        }
    }
}

/// The child answers of every episode, in order.
fn answers(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("episodes.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["child"].as_str().unwrap().to_string()
        })
        .collect()
}

fn devices(run: &Path) -> Vec<String> {
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    cfg["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn emulated_run_writes_the_cpu_metrics_the_same_on_repeat_and_continues_a_cpu_run() {
    let dir = root("match");
    ok(&pgsrm(&dir, &args(&train("pgsrm", "cpu", 30, "cpu")), &[]));
    ok(&pgsrm(&dir, &args(&train("pgsrm", "emu", 30, "emu")), &[]));
    ok(&pgsrm(
        &dir,
        &args(&train("pgsrm", "emu-again", 30, "emu")),
        &[],
    ));
    let cpu = metrics(&dir.join("runs/cpu"));
    let emu = metrics(&dir.join("runs/emu"));
    assert_eq!(cpu.len(), 5);
    // The reward moved: the comparison covers the PGSRM reward, not only zeros.
    assert!(cpu.iter().any(|m| m["reward_mean"].as_f64().unwrap() > 0.0));
    assert_close(&emu, &cpu, 1e-3);
    // The device draws its uniforms from the trainer's generator as the CPU does: the same answers.
    let said = answers(&dir.join("runs/cpu"));
    assert_eq!(said.len(), 30);
    assert_eq!(answers(&dir.join("runs/emu")), said);
    // Deterministic kernels: the same bits on repeat.
    assert_eq!(emu, metrics(&dir.join("runs/emu-again")));
    assert_eq!(devices(&dir.join("runs/cpu")), ["cpu"]);
    let on_emu = devices(&dir.join("runs/emu"));
    assert_eq!(on_emu.len(), 1);
    assert!(on_emu[0].starts_with("emulated device"), "{on_emu:?}");

    // 3 updates on the CPU (its last writes a checkpoint), then 2 more on the emulated device.
    ok(&pgsrm(
        &dir,
        &args(&train("pgsrm", "moved", 18, "cpu")),
        &[],
    ));
    let moved = dir.join("runs/moved");
    let resume = [
        "train",
        "--resume",
        moved.to_str().unwrap(),
        "--episodes",
        "30",
        "--device",
        "emu",
        "--quiet",
    ];
    ok(&pgsrm(&dir, &resume, &[]));
    assert_close(&metrics(&moved), &cpu, 1e-3);
    let d = devices(&moved);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0], "cpu");
    assert!(d[1].starts_with("emulated device"), "{d:?}");
    // Four runs' checkpoints: 650 MB left in the temporary folder otherwise.
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_device_that_cannot_open_stops_the_run_before_its_folder() {
    let dir = root("no-device");
    // No C++ compiler for the emulated device.
    let out = pgsrm(
        &dir,
        &args(&train("binary", "no-compiler", 6, "emu")),
        &[("CXX", "/nonexistent/c++")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--device emu"), "{err}");
    assert!(err.contains("/nonexistent/c++"), "{err}");
    assert!(!dir.join("runs/no-compiler").exists());
    // No CUDA device on this machine: one line that says which part is missing.
    if pgsrm::cuda::device_count() == 0 {
        let out = pgsrm(&dir, &args(&train("binary", "no-gpu", 6, "cuda")), &[]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--device cuda:"), "{err}");
        assert!(!dir.join("runs/no-gpu").exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn running_out_of_device_memory_names_the_batch_and_keeps_the_last_checkpoint() {
    let dir = root("oom");
    // Two updates of 64 episodes of 8 new tokens on the CPU, a checkpoint after each.
    let mut first = train("binary", "oom", 128, "cpu");
    let mut set = |flag: &str, value: &str| {
        let at = first.iter().position(|a| a == flag).unwrap();
        first[at + 1] = value.into();
    };
    set("--batch-size", "64");
    set("--checkpoint-every", "1");
    first.extend(["--max-new-tokens", "8"].map(String::from));
    ok(&pgsrm(&dir, &args(&first), &[]));
    let run = dir.join("runs/oom");
    // Continued on an emulated device with room for the model, its reference and optimiser
    // moments, but not for the update's logits (512 rows of 50,257).
    let resume = [
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--episodes",
        "192",
        "--device",
        "emu",
        "--quiet",
    ];
    let out = pgsrm(&dir, &resume, &[("PGSRM_EMU_MEMORY", OOM_LIMIT)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for said in [
        "training stopped at update 3, a batch of 64 episodes",
        "step-2, is kept",
        "out of device memory",
        "bytes asked for",
    ] {
        assert!(err.contains(said), "{said:?} not in: {err}");
    }
    assert!(run.join("step-2").is_dir());
    assert_eq!(metrics(&run).len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Device memory for the test above: above what resuming needs (the model, its reference and
/// two optimiser moments, with a second copy of the restored parts while they upload: about
/// 7 x 28 MB for GPT-2 tiny), below what the update needs on top of four copies (its logits and
/// their gradient alone are 2 x 103 MB).
const OOM_LIMIT: &str = "260M";
