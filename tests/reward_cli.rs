//! `pgsrm reward` and `pgsrm tasks` from the outside: JSON output, and errors that name the flag,
//! the file or the line.

use serde_json::Value;
use std::process::Command;

fn pgsrm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("pgsrm-reward-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn binary_reward_needs_no_embedder() {
    let (ok, out, err) = pgsrm(&[
        "reward",
        "--parent",
        "Purple",
        "--child",
        " purple",
        "--shaping",
        "binary",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["shapings"], serde_json::json!(["binary"]));
    assert_eq!(v["embedder"], Value::Null);
    assert_eq!(v["pairs"][0]["rewards"]["binary"], 1.0);

    let pairs = temp_file(
        "pairs.jsonl",
        "{\"parent\": \"cold\", \"child\": \"Cold\"}\n\n{\"parent\": \"cold\", \"child\": \"hot\"}\n",
    );
    let (ok, out, err) = pgsrm(&["reward", "--pairs", &pairs, "--shaping", "binary"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let rewards: Vec<f64> = v["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rewards"]["binary"].as_f64().unwrap())
        .collect();
    assert_eq!(rewards, vec![1.0, 0.0]);
}

#[test]
fn bad_input_names_the_flag_file_and_line() {
    let bad = temp_file(
        "bad.jsonl",
        "{\"parent\": \"a\", \"child\": \"b\"}\n{\"parent\": \"a\"}\n",
    );
    let (ok, _, err) = pgsrm(&["reward", "--pairs", &bad, "--shaping", "binary"]);
    assert!(!ok);
    assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");

    let (ok, _, err) = pgsrm(&[
        "reward",
        "--pairs",
        "/no/such/pairs.jsonl",
        "--shaping",
        "binary",
    ]);
    assert!(!ok);
    assert!(err.contains("/no/such/pairs.jsonl"), "{err}");

    let (ok, _, err) = pgsrm(&[
        "reward",
        "--parent",
        "a",
        "--child",
        "b",
        "--shaping",
        "cosine",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--shaping") && err.contains("pgsrm, truncate, euclidean, binary"),
        "{err}"
    );

    let (ok, _, err) = pgsrm(&[
        "reward",
        "--parent",
        "a",
        "--child",
        "b",
        "--power=-1",
        "--shaping",
        "binary",
    ]);
    assert!(!ok);
    assert!(err.contains("--power"), "{err}");

    let (ok, _, err) = pgsrm(&["reward", "--shaping", "binary"]);
    assert!(!ok);
    assert!(err.contains("--pairs"), "{err}");
}

#[test]
fn tasks_lists_every_task_with_an_example() {
    let (ok, out, err) = pgsrm(&["tasks", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, pgsrm::tasks::NAMES);
    for t in v.as_array().unwrap() {
        let task = pgsrm::tasks::by_name(t["name"].as_str().unwrap()).unwrap();
        let prompt = t["example"]["prompt"].as_str().unwrap();
        assert_eq!(task.answer(prompt), t["example"]["answer"].as_str());
        assert!(t["settings"]["max_new_tokens"].as_u64().unwrap() > 0);
    }
    let (ok, out, _) = pgsrm(&["tasks", "--task", "copy"]);
    assert!(ok);
    assert!(out.contains("Copy this sentence: '{sentence}'"), "{out}");
    let (ok, _, err) = pgsrm(&["tasks", "--task", "poems"]);
    assert!(!ok);
    assert!(
        err.contains("poems") && err.contains("colors, opposites, categories, copy, negative"),
        "{err}"
    );
}

#[test]
fn minilm_rewards_by_default() {
    let pairs = temp_file(
        "minilm.jsonl",
        "{\"parent\": \"purple\", \"child\": \"violet\"}\n{\"parent\": \"The cat sat.\", \"child\": \"the cat sat.\"}\n{\"parent\": \"\", \"child\": \"\"}\n",
    );
    let (ok, out, err) = pgsrm(&["reward", "--pairs", &pairs, "--all"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["embedder"], "minilm");
    let p = &v["pairs"][0];
    // sentence-transformers 5 (all-MiniLM-L6-v2, CPU) gives cos("purple", "violet") = 0.5882111.
    let c = p["cosine"].as_f64().unwrap();
    assert!((c - 0.5882111).abs() < 1e-4, "{c}");
    let r = &p["rewards"];
    assert!((r["pgsrm"].as_f64().unwrap() - ((c + 1.0) / 2.0).powi(4)).abs() < 1e-6);
    assert!((r["truncate"].as_f64().unwrap() - c.powi(4)).abs() < 1e-6);
    assert!((r["euclidean"].as_f64().unwrap() - (1.0 - (2.0 - 2.0 * c).sqrt())).abs() < 1e-5);
    assert_eq!(r["binary"], 0.0);
    // MiniLM lower-cases its input: same text up to case, the same vector.
    let q = &v["pairs"][1];
    assert!((q["cosine"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(q["rewards"]["binary"], 1.0);
    // Empty texts: finite rewards.
    for s in ["pgsrm", "truncate", "euclidean", "binary"] {
        assert!(
            v["pairs"][2]["rewards"][s].as_f64().unwrap().is_finite(),
            "{s}"
        );
    }
}
