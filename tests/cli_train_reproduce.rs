//! `pgsrm reproduce` on `random:tiny` (both rewards, one seed, a few updates) for one task and for
//! a list of tasks (a report over them, with progress for the whole job), and Ctrl-C during
//! `pgsrm train` writing a checkpoint before the process exits.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn root(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pgsrm-cli-repro-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `pgsrm reproduce` on `random:tiny`, seed 3, three updates of 6 episodes per run, into
/// `dir/rep`.
fn reproduce(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .current_dir(dir)
        .args(["reproduce", "--task", "colors", "--model", "random:tiny"])
        .args(["--seeds", "3", "--episodes", "18", "--batch-size", "6"])
        .args(["--quiet", "--out", "rep"])
        .output()
        .unwrap()
}

#[test]
fn reproduce_trains_both_rewards_evaluates_and_reports() {
    let dir = root("repro");
    let out = reproduce(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep = dir.join("rep");
    for reward in ["pgsrm", "binary"] {
        let run = rep.join(format!("colors-{reward}-seed3"));
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["reward"], reward);
        assert_eq!(cfg["seed"], 3);
        let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 3);
        let eval: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
        let em = eval["exact_match"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&em));
        // One checkpoint, at the end.
        let steps: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("step-"))
            .collect();
        assert_eq!(steps, ["step-3"]);
    }
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(md.contains("| pgsrm | 1 | 3 |"), "{md}");
    assert!(md.contains("| binary | 1 | 3 |"), "{md}");
    assert!(md.contains("Wall time"));
    for stem in ["reward", "kl", "entropy"] {
        assert!(rep.join(format!("{stem}.png")).is_file());
        let svg = std::fs::read_to_string(rep.join(format!("{stem}.svg")))
            .unwrap()
            .replace('\n', "");
        assert!(
            svg.contains(">pgsrm<") && svg.contains(">binary<"),
            "{stem}.svg"
        );
    }
    // The last checkpoint of a reproduction run holds no optimiser moments, so it is a third
    // of the size, and a run cannot continue from it: `train --resume` says so.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(rep.join("colors-pgsrm-seed3/step-3/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["optimizer_moments"], false);
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .current_dir(&dir)
        .args([
            "train",
            "--resume",
            "rep/colors-pgsrm-seed3",
            "--episodes",
            "24",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("optimiser moments"), "{err}");
    // Run again, it reads the runs it has (complete here) instead of refusing them.
    let before = std::fs::read(rep.join("colors-pgsrm-seed3/metrics.jsonl")).unwrap();
    let out = reproduce(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read(rep.join("colors-pgsrm-seed3/metrics.jsonl")).unwrap();
    assert_eq!(before, after);
    // A run that stopped before its checkpoint is trained again from the start.
    let binary = rep.join("colors-binary-seed3");
    std::fs::remove_dir_all(binary.join("step-3")).unwrap();
    std::fs::remove_file(binary.join("latest")).unwrap();
    let out = reproduce(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("starting it again"), "{err}");
    assert!(binary.join("step-3").is_dir());
    let lines = std::fs::read_to_string(binary.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reproduce_over_several_tasks_reports_each_and_all_with_progress() {
    let dir = root("tasks");
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .current_dir(&dir)
        .args([
            "reproduce",
            "--task",
            "colors,copy",
            "--model",
            "random:tiny",
        ])
        .args(["--seeds", "3", "--episodes", "8", "--batch-size", "4"])
        .args(["--out", "rep"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Progress names the run of the whole job and the time left.
    assert!(err.contains("run 4 of 4 (copy binary, seed 3)"), "{err}");
    assert!(err.contains(" left"), "{err}");
    let rep = dir.join("rep");
    for task in ["colors", "copy"] {
        for reward in ["pgsrm", "binary"] {
            let run = rep.join(task).join(format!("{task}-{reward}-seed3"));
            assert!(run.join("eval.json").is_file(), "{}", run.display());
        }
        let md = std::fs::read_to_string(rep.join(task).join("report.md")).unwrap();
        assert!(md.contains("| pgsrm | 1 | 2 |"), "{md}");
        assert!(rep.join(task).join("reward.svg").is_file());
    }
    // The sentence task keeps its longer answers.
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(rep.join("copy/copy-pgsrm-seed3/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["max_new_tokens"], 10);
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    for row in [
        "| colors | pgsrm | 1 |",
        "| colors | binary | 1 |",
        "| copy | pgsrm | 1 |",
        "| copy | binary | 1 |",
    ] {
        assert!(md.contains(row), "{row}: {md}");
    }
    assert!(
        md.contains("(overall.svg)") && md.contains("(copy/reward.svg)"),
        "{md}"
    );
    assert!(md.contains("Wall time"), "{md}");
    for f in ["overall.svg", "overall.png", "summary.json"] {
        assert!(rep.join(f).is_file(), "{f}");
    }
    let svg = std::fs::read_to_string(rep.join("overall.svg"))
        .unwrap()
        .replace('\n', "");
    assert!(svg.contains(">colors<") && svg.contains(">copy<"));
    // A task that does not exist is refused before anything runs, naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .current_dir(&dir)
        .args([
            "reproduce",
            "--task",
            "colors,nope",
            "--model",
            "random:tiny",
        ])
        .args(["--out", "bad"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--task") && err.contains("nope"), "{err}");
    assert!(!dir.join("bad").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_writes_a_checkpoint_before_exiting() {
    let dir = root("int");
    let child = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .current_dir(&dir)
        .args([
            "train",
            "--task",
            "colors",
            "--model",
            "random:tiny",
            "--reward",
            "binary",
        ])
        .args([
            "--episodes",
            "1000000",
            "--batch-size",
            "4",
            "--run-name",
            "i",
            "--quiet",
        ])
        .args(["--checkpoint-every", "1000000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.join("runs/i/metrics.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no updates logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted"), "{err}");
    let latest = std::fs::read_to_string(dir.join("runs/i/latest")).unwrap();
    let step: usize = latest
        .trim()
        .strip_prefix("step-")
        .unwrap()
        .parse()
        .unwrap();
    let logged = std::fs::read_to_string(&metrics).unwrap().lines().count();
    assert_eq!(step, logged);
    assert!(
        dir.join(format!("runs/i/step-{step}/trainer_state.json"))
            .is_file()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The lines of a metrics file without the fields that time the machine.
fn figures(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            m.remove("seconds");
            m.remove("episodes_per_s");
            m.remove("phase_seconds");
            v
        })
        .collect()
}

#[test]
fn runs_trained_at_once_give_the_figures_of_runs_one_at_a_time() {
    let dir = root("jobs");
    // Two threads: one run at a time gets both, two at once get one each.
    for jobs in ["1", "2"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
            .current_dir(&dir)
            .env("RAYON_NUM_THREADS", "2")
            .args(["reproduce", "--task", "colors", "--model", "random:tiny"])
            .args(["--seeds", "3,4", "--episodes", "12", "--batch-size", "6"])
            .args(["--jobs", jobs, "--out", &format!("rep{jobs}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        if jobs == "2" {
            assert!(err.contains("2 runs at once, 1 thread(s) each"), "{err}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .current_dir(&dir)
        .args(["reproduce", "--task", "colors", "--jobs", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--jobs: give at least 1"),
        "{err}"
    );
    for reward in ["pgsrm", "binary"] {
        for seed in [3, 4] {
            let run = format!("colors-{reward}-seed{seed}");
            let (one, two) = (dir.join("rep1").join(&run), dir.join("rep2").join(&run));
            assert_eq!(
                figures(&one.join("metrics.jsonl")),
                figures(&two.join("metrics.jsonl")),
                "{run}"
            );
            assert_eq!(
                std::fs::read(one.join("episodes.jsonl")).unwrap(),
                std::fs::read(two.join("episodes.jsonl")).unwrap(),
                "{run}"
            );
            // The evaluation names its checkpoint's path, which differs; nothing else may.
            let eval = |d: &Path| {
                let mut v: Value =
                    serde_json::from_str(&std::fs::read_to_string(d.join("eval.json")).unwrap())
                        .unwrap();
                v.as_object_mut().unwrap().remove("model");
                v
            };
            assert_eq!(eval(&one), eval(&two), "{run}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
