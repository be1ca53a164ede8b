//! `pgsrm reproduce --scale` and `--plan`: the runs each scale would train, their settings and
//! child, printed without training (the paper's 100,000 episodes are never run here); and a job
//! that refuses a run folder holding a run with other settings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pgsrm-cli-scale-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Our cache, as the commands find it (the emulated device keeps its built runtime there).
fn pgsrm_home() -> PathBuf {
    std::env::var_os("PGSRM_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/pgsrm")
        })
}

/// `pgsrm reproduce ARGS` in `dir` with `hub` as the only Hugging Face cache (HOME points into
/// `dir`, so a developer's own cached GPT-2 does not change the plan).
fn reproduce(dir: &Path, hub: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .current_dir(dir)
        .env("PGSRM_HOME", pgsrm_home())
        .env("HOME", dir)
        .env("HF_HUB_CACHE", hub)
        .env_remove("HF_HOME")
        .env_remove("HF_ENDPOINT")
        .arg("reproduce")
        .args(args)
        .output()
        .unwrap()
}

/// The plan's stdout, after checking the command succeeded.
fn plan(dir: &Path, hub: &Path, args: &[&str]) -> String {
    let out = reproduce(dir, hub, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The plan's block for `task`: its child line, its settings line and its runs.
fn block<'a>(plan: &'a str, task: &str) -> &'a str {
    let start = plan
        .find(&format!("\n{task}: child "))
        .unwrap_or_else(|| panic!("no {task} in the plan: {plan}"));
    let rest = &plan[start + 1..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

/// A Hugging Face cache entry for `repo` with the files the child choice looks for.
fn cache(hub: &Path, repo: &str) {
    let snap = hub.join(format!("models--{repo}/snapshots/0123abcd"));
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::write(snap.join(f), b"{}").unwrap();
    }
}

const WORD_TASKS: [&str; 3] = ["colors", "opposites", "categories"];
const SENTENCE_TASKS: [&str; 2] = ["copy", "negative"];

#[test]
fn paper_scale_runs_each_task_at_the_papers_settings_and_says_which_child_and_why() {
    let dir = root("paper");
    let hub = dir.join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    // No GPT-2 weights: every task falls back to SmolLM2, at the paper's batch and length.
    let p = plan(
        &dir,
        &hub,
        &[
            "--task", "all", "--scale", "paper", "--device", "cpu", "--plan",
        ],
    );
    assert!(p.contains("scale paper"), "{p}");
    assert!(p.contains("30 runs, 3000000 episodes in all"), "{p}");
    for task in WORD_TASKS {
        let b = block(&p, task);
        assert!(
            b.contains("child smollm2-135m-instruct (GPT-2 small (gpt2) weights not found in the Hugging Face cache: SmolLM2-135M-Instruct)"),
            "{b}"
        );
        assert!(
            b.contains("100000 episodes per run, batch 50, 2 new tokens"),
            "{b}"
        );
        assert!(b.contains("a checkpoint every 200,"), "{b}");
        for reward in ["pgsrm", "binary"] {
            for seed in 1..=3 {
                let run =
                    format!("runs/reproduce-paper-all/{task}/{task}-{reward}-seed{seed}: new");
                assert!(b.contains(&run), "{run}: {b}");
            }
        }
    }
    for task in SENTENCE_TASKS {
        let b = block(&p, task);
        assert!(
            b.contains("(GPT-2 large (gpt2-large) weights not found in the Hugging Face cache: SmolLM2-135M-Instruct)"),
            "{b}"
        );
        assert!(
            b.contains("100000 episodes per run, batch 10, 10 new tokens"),
            "{b}"
        );
        assert!(b.contains("a checkpoint every 1000,"), "{b}");
    }
    // A plan writes nothing.
    assert!(!dir.join("runs").exists());

    // GPT-2 small cached, GPT-2 large not: the word tasks get the paper's child and its
    // settings, the sentence tasks still SmolLM2, each saying why.
    cache(&hub, "gpt2");
    let p = plan(
        &dir,
        &hub,
        &[
            "--task",
            "colors,copy",
            "--scale",
            "paper",
            "--device",
            "cpu",
            "--plan",
        ],
    );
    let b = block(&p, "colors");
    assert!(
        b.contains("child gpt2 (GPT-2 small, the paper's child, found in the Hugging Face cache)"),
        "{b}"
    );
    assert!(
        b.contains(
            "100000 episodes per run, batch 50, 2 new tokens, actor lr 1e-5, raw prompts, critic \
             baseline, entropy bonus 0.01"
        ),
        "{b}"
    );
    let b = block(&p, "copy");
    assert!(
        b.contains("child smollm2-135m-instruct (GPT-2 large (gpt2-large) weights not found"),
        "{b}"
    );
    assert!(b.contains("batch 10, 10 new tokens"), "{b}");
    assert!(
        b.contains("runs/reproduce-paper-colors-copy/copy/copy-binary-seed3: new"),
        "{b}"
    );
    // The paper's GPT-2 large, cached under its organisation's name, is found the same way.
    cache(&hub, "openai-community--gpt2-large");
    let p = plan(
        &dir,
        &hub,
        &[
            "--task", "negative", "--scale", "paper", "--device", "cpu", "--plan",
        ],
    );
    let b = block(&p, "negative");
    assert!(
        b.contains("child gpt2-large (GPT-2 large, the paper's child, found"),
        "{b}"
    );

    // Flags override the scale's values.
    let p = plan(
        &dir,
        &hub,
        &[
            "--task",
            "colors,copy",
            "--scale",
            "paper",
            "--device",
            "cpu",
            "--plan",
            "--model",
            "random:tiny",
            "--episodes",
            "1000",
            "--batch-size",
            "20",
        ],
    );
    assert!(
        p.contains("--model, --episodes, --batch-size as given"),
        "{p}"
    );
    for task in ["colors", "copy"] {
        let b = block(&p, task);
        assert!(b.contains("child random:tiny (given by --model)"), "{b}");
        assert!(b.contains("1000 episodes per run, batch 20,"), "{b}");
    }
    assert!(block(&p, "copy").contains("10 new tokens"), "{p}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quick_scale_is_trains_defaults_and_the_default_off_a_gpu() {
    let dir = root("quick");
    let hub = dir.join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    for scale in [None, Some("quick")] {
        let mut args = vec!["--task", "colors,copy", "--device", "cpu", "--plan"];
        if let Some(s) = scale {
            args.extend(["--scale", s]);
        }
        let p = plan(&dir, &hub, &args);
        let chosen = match scale {
            None => {
                "scale quick (`pgsrm train`'s defaults for each task), the default off a CUDA GPU"
            }
            Some(_) => "scale quick (`pgsrm train`'s defaults for each task), set by --scale",
        };
        assert!(p.contains(chosen), "{p}");
        assert!(p.contains("12 runs, 2880 episodes in all"), "{p}");
        for (task, tokens) in [("colors", 2), ("copy", 10)] {
            let b = block(&p, task);
            assert!(b.contains("child smollm2-135m-instruct"), "{b}");
            assert!(
                b.contains(&format!(
                    "240 episodes per run, batch 8, {tokens} new tokens, actor lr 2e-5, chat \
                     prompts, batch-mean baseline, entropy bonus 0; 30 updates, one checkpoint \
                     at the end"
                )),
                "{b}"
            );
            assert!(
                b.contains(&format!(
                    "runs/reproduce-colors-copy/{task}/{task}-pgsrm-seed1: new"
                )),
                "{b}"
            );
        }
    }
    // The emulated device is no CUDA GPU: quick by default there too.
    let p = plan(
        &dir,
        &hub,
        &["--task", "colors", "--device", "emu", "--plan"],
    );
    assert!(p.contains("the default off a CUDA GPU"), "{p}");
    assert!(
        block(&p, "colors").contains("240 episodes per run, batch 8,"),
        "{p}"
    );
    // A scale that does not exist is refused, naming the flag.
    let out = reproduce(
        &dir,
        &hub,
        &["--task", "colors", "--scale", "huge", "--plan"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--scale"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("runs").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_job_does_not_take_over_a_run_folder_with_other_settings() {
    let dir = root("mixed");
    let hub = dir.join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    // The assets (GPT-2's tokenizer, MiniLM) from the usual cache: only HOME-free variables here.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pgsrm"))
            .current_dir(&dir)
            .env("HF_HUB_CACHE", &hub)
            .args(["reproduce", "--task", "colors", "--model", "random:tiny"])
            .args(["--seeds", "3", "--episodes", "6", "--device", "cpu"])
            .args(["--quiet", "--out", "rep"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--batch-size", "6", "--scale", "quick"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = dir.join("rep/colors-pgsrm-seed3/metrics.jsonl");
    let before = std::fs::read(&metrics).unwrap();
    let md = std::fs::read_to_string(dir.join("rep/report.md")).unwrap();
    assert!(md.contains("scale quick"), "{md}");
    assert!(md.contains("Child: random:tiny (given by --model)"), "{md}");
    // Another batch size: the job stops before training, naming the folder and the setting.
    for extra in [&["--scale", "quick"][..], &["--scale", "paper"][..]] {
        let out = run(&[&["--batch-size", "3"][..], extra].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("rep/colors-pgsrm-seed3") && err.contains("batch_size 6 there, 3 here"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
    // The plan says so too, and exits without touching the runs.
    let out = run(&["--batch-size", "3", "--plan"]);
    let p = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        p.contains(
            "rep/colors-binary-seed3: holds a run with other settings (batch_size 6 there, 3 here)"
        ),
        "{p}"
    );
    // The same settings are read, whichever scale asks for them.
    let out = run(&["--batch-size", "6", "--plan"]);
    let p = String::from_utf8_lossy(&out.stdout);
    assert!(
        p.contains("rep/colors-pgsrm-seed3: finished: read, not trained"),
        "{p}"
    );
    let out = run(&["--batch-size", "6", "--scale", "paper"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}
