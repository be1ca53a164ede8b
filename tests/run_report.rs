//! Comparing runs: the smoothness figure by hand, and `pgsrm compare` on two run folders.

use pgsrm::run::RunDir;
use pgsrm::run::report::{smoothness, start_end};
use serde_json::json;
use std::process::Command;

#[test]
fn smoothness_is_the_std_of_update_to_update_changes() {
    // Changes 0.1, 0.2, 0.0: mean 0.1, deviations 0, 0.1, -0.1, std = sqrt(0.02 / 3).
    let s = smoothness(&[0.0, 0.1, 0.3, 0.3]).unwrap();
    assert!((s - (0.02f64 / 3.0).sqrt()).abs() < 1e-12, "{s}");
    // A straight line is perfectly smooth whatever its slope.
    assert!(smoothness(&[1.0, 2.0, 3.0, 4.0]).unwrap().abs() < 1e-12);
    assert!(smoothness(&[1.0, 2.0]).is_none());
    let v: Vec<f64> = (0..20).map(|i| i as f64).collect();
    assert_eq!(start_end(&v), (Some(0.5), Some(18.5)));
}

#[test]
fn compare_writes_the_table_and_plots() {
    let root = std::env::temp_dir().join(format!("pgsrm-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (name, reward, curve) in [
        ("a", "pgsrm", [0.1, 0.2, 0.3, 0.4, 0.5]),
        ("b", "binary", [0.0, 0.4, 0.0, 0.4, 0.0]),
        ("c", "binary", [0.0, 0.0, 0.0, 0.0, 0.0]),
    ] {
        let mut run = RunDir::create(
            &root.join(name),
            &json!({"run_name": name, "reward": reward}),
        )
        .unwrap();
        for (i, r) in curve.iter().enumerate() {
            run.append_metrics(
                &json!({"update": i + 1, "reward_mean": r, "reward_min": 0.0,
                "reward_max": 1.0, "kl": 0.01 * i as f64, "entropy": 3.0}),
            )
            .unwrap();
        }
    }
    std::fs::write(
        root.join("b/eval.json"),
        r#"{"exact_match": 0.25, "mean_reward": 0.5}"#,
    )
    .unwrap();
    let out_dir = root.join("cmp");
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .arg("compare")
        .arg(root.join("a"))
        .arg(root.join("b"))
        .arg(root.join("c"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    // Run a: straight line, smoothness 0; run b: changes +-0.4, std 0.4.
    assert!(
        md.contains("| a | 1 | 5 | 0.1000 | 0.5000 | 0.0000 | 0.0200 |"),
        "{md}"
    );
    assert!(
        md.contains("| b | 1 | 5 | 0.0000 | 0.0000 | 0.4000 |"),
        "{md}"
    );
    assert!(md.contains("| 0.2500 | 0.5000 |"), "{md}");
    // A curve that never moved is called flat, not smooth; one that moved is not.
    assert!(
        md.contains("c: the mean reward was 0 at every update"),
        "{md}"
    );
    assert!(!md.contains("a: the mean reward was") && !md.contains("b: the mean reward was"));
    for stem in ["reward", "kl", "entropy"] {
        let svg = std::fs::read_to_string(out_dir.join(format!("{stem}.svg")))
            .unwrap()
            .replace('\n', "");
        // Each run is named in the legend.
        assert!(svg.contains(">a<") && svg.contains(">b<"), "{stem}.svg");
        let png = std::fs::read(out_dir.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .arg("compare")
        .arg(root.join("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    std::fs::remove_dir_all(&root).unwrap();
}
