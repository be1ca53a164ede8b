//! `pgsrm bench` on the CPU: the update job reports seconds per update and every phase of it; the
//! GPU-only job and the emulated device are refused with the reason. Figures are not checked
//! (speed is measured by benchmarks, not tests), only that each is there and makes sense.

use serde_json::Value;
use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_update_job_reports_every_phase() {
    let out = bench(&[
        "--job",
        "update",
        "--device",
        "cpu",
        "--model",
        "random:tiny",
        "--batch",
        "4",
        "--runs",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["job"], "update");
    let f = &line["figure"];
    assert_eq!(f["batch"], 4);
    assert_eq!(f["new_tokens"], 2, "the task's answer length: {f}");
    assert_eq!(f["updates"], 2);
    let seconds = f["seconds_per_update"].as_f64().unwrap();
    assert!(seconds > 0.0, "{f}");
    let phases = &f["phase_seconds"];
    let mut sum = 0.0;
    for k in ["rollout", "reward", "reference", "actor", "optimiser"] {
        let s = phases[k].as_f64().unwrap_or(-1.0);
        assert!(s >= 0.0, "{k}: {phases}");
        sum += s;
    }
    assert!(phases["actor"].as_f64().unwrap() > 0.0, "{phases}");
    // Medians of each phase need not add up to the median update, but cannot dwarf it.
    assert!(
        sum <= 3.0 * seconds,
        "{phases} against {seconds} s per update"
    );
}

#[test]
fn what_the_cpu_cannot_measure_is_refused_with_the_reason() {
    let out = bench(&["--job", "matmul", "--device", "cpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --device cuda"), "{err}");
    let out = bench(&["--job", "update", "--device", "emu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("never a speed figure"), "{err}");
}
