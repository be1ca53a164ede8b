//! The run folder: metrics readable while appended, atomic checkpoints, no overwriting, and bad
//! input that leaves a run as it was.

use pgsrm::run::RunDir;
use pgsrm::run::folder::{
    EPISODES, EPISODES_PER_LATER_UPDATE, FULL_EPISODE_UPDATES, LATEST, METRICS, latest_checkpoint,
    load_state, read_jsonl, save_state,
};
use pgsrm::tensor::Tensor;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

fn fresh(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pgsrm-run-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn metrics_are_readable_while_the_run_appends() {
    let dir = fresh("metrics");
    let mut run = RunDir::create(&dir, &json!({"task": "colors"})).unwrap();
    for u in 1..=3u64 {
        run.append_metrics(&json!({"update": u, "reward_mean": u as f64 / 10.0}))
            .unwrap();
        // Read by another handle, as a plotting tool would while the run goes on.
        let lines = read_jsonl(&dir.join(METRICS)).unwrap();
        assert_eq!(lines.len(), u as usize);
        assert_eq!(lines.last().unwrap()["update"], u);
    }
    // A line caught half written is skipped, not an error.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(METRICS))
        .unwrap();
    f.write_all(b"{\"update\": 4, \"rew").unwrap();
    drop(f);
    assert_eq!(read_jsonl(&dir.join(METRICS)).unwrap().len(), 3);
    // A corrupt complete line is named by file and line.
    std::fs::write(dir.join("bad.jsonl"), "{\"a\":1}\nnot json\n").unwrap();
    let e = format!("{:#}", read_jsonl(&dir.join("bad.jsonl")).unwrap_err());
    assert!(e.contains("bad.jsonl:2"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_to_start_over_an_existing_run() {
    let dir = fresh("refuse");
    RunDir::create(&dir, &json!({"task": "colors", "seed": 1})).unwrap();
    let before = snapshot(&dir);
    let e = format!(
        "{:#}",
        RunDir::create(&dir, &json!({"task": "copy"}))
            .err()
            .unwrap()
    );
    assert!(e.contains("already holds a run"), "{e}");
    assert_eq!(snapshot(&dir), before);
    // An empty folder is fine to start in.
    let empty = fresh("empty");
    std::fs::create_dir_all(&empty).unwrap();
    RunDir::create(&empty, &json!({})).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn checkpoints_appear_whole_or_not_at_all() {
    let dir = fresh("ckpt");
    let run = RunDir::create(&dir, &json!({})).unwrap();
    assert!(latest_checkpoint(&dir).unwrap().is_none());
    let critic = Tensor::from_vec(&[2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-7, -4.25]);
    run.write_checkpoint(2, |d| {
        std::fs::write(d.join("model.safetensors"), b"weights").unwrap();
        save_state(
            d,
            &[("critic.weight".into(), &critic)],
            &json!({"kl_coef": 0.25}),
        )
    })
    .unwrap();
    let (step, path) = latest_checkpoint(&dir).unwrap().unwrap();
    assert_eq!((step, path.clone()), (2, dir.join("step-2")));
    let (tensors, rest) = load_state(&path).unwrap();
    assert_eq!(tensors["critic.weight"], critic);
    assert_eq!(rest["kl_coef"], 0.25);
    let before = snapshot(&dir);
    // A checkpoint whose writing fails half way leaves no folder, and `latest` unchanged.
    let e = run
        .write_checkpoint(3, |d| {
            std::fs::write(d.join("model.safetensors"), b"half").unwrap();
            anyhow::bail!("disk full")
        })
        .unwrap_err();
    assert!(format!("{e:#}").contains("disk full"));
    assert!(!dir.join("step-3").exists());
    assert_eq!(snapshot(&dir), before);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    // Rewriting a step replaces it whole.
    run.write_checkpoint(2, |d| {
        std::fs::write(d.join("model.safetensors"), b"new").unwrap();
        Ok(())
    })
    .unwrap();
    assert_eq!(
        std::fs::read(dir.join("step-2/model.safetensors")).unwrap(),
        b"new"
    );
    assert!(!dir.join("step-2").join("trainer_state.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn episodes_follow_the_cap_rule() {
    let dir = fresh("episodes");
    let mut run = RunDir::create(&dir, &json!({})).unwrap();
    let batch: Vec<_> = (0..7)
        .map(|i| json!({"prompt": format!("p{i}"), "reward": i}))
        .collect();
    let updates = FULL_EPISODE_UPDATES + 3;
    for u in 1..=updates {
        run.append_episodes(u, &batch).unwrap();
    }
    let lines = read_jsonl(&dir.join(EPISODES)).unwrap();
    let expected = FULL_EPISODE_UPDATES as usize * 7 + 3 * EPISODES_PER_LATER_UPDATE;
    assert_eq!(lines.len(), expected);
    assert_eq!(lines[0]["update"], 1);
    assert_eq!(lines[0]["prompt"], "p0");
    assert_eq!(lines.last().unwrap()["update"], updates);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_drops_what_came_after_the_checkpoint_and_bad_input_changes_nothing() {
    let dir = fresh("resume");
    let mut run = RunDir::create(&dir, &json!({"task": "colors"})).unwrap();
    for u in 1..=5u64 {
        run.append_metrics(&json!({"update": u})).unwrap();
        run.append_episodes(u, &[json!({"prompt": "p"})]).unwrap();
        if u == 3 {
            run.write_checkpoint(3, |_| Ok(())).unwrap();
        }
    }
    drop(run);
    let mut r = RunDir::resume(&dir).unwrap();
    assert_eq!(r.checkpoint.as_ref().unwrap().0, 3);
    assert_eq!(r.config["task"], "colors");
    r.dir.truncate_after(3).unwrap();
    r.dir.append_metrics(&json!({"update": 4})).unwrap();
    let ups: Vec<u64> = read_jsonl(&dir.join(METRICS))
        .unwrap()
        .iter()
        .map(|v| v["update"].as_u64().unwrap())
        .collect();
    assert_eq!(ups, [1, 2, 3, 4]);
    assert_eq!(read_jsonl(&dir.join(EPISODES)).unwrap().len(), 3);
    drop(r);

    // A `latest` that names a missing checkpoint, or a corrupt config, stops the resume and
    // leaves every file as it was.
    std::fs::write(dir.join(LATEST), "step-9\n").unwrap();
    let before = snapshot(&dir);
    let e = format!("{:#}", RunDir::resume(&dir).err().unwrap());
    assert!(e.contains("step-9"), "{e}");
    assert_eq!(snapshot(&dir), before);
    std::fs::write(dir.join(LATEST), "step-3\n").unwrap();
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let before = snapshot(&dir);
    let e = format!("{:#}", RunDir::resume(&dir).err().unwrap());
    assert!(e.contains("config.json"), "{e}");
    assert_eq!(snapshot(&dir), before);
    let e = format!("{:#}", RunDir::resume(&fresh("nothing")).err().unwrap());
    assert!(e.contains("no run there"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Floats whose shortest text does not come back unchanged from serde_json's default parse and a
/// print (found by a search over random doubles): a resume that wrote its kept lines back from a
/// parse changed them by one unit in the last place, on whichever CPU produced such a value.
const FRAGILE_FLOATS: [&str; 4] = [
    "4.663862002217239e-14",
    "1.2350075938893521e-6",
    "4.2033704998645095e-13",
    "2.2201838057111728e-13",
];

#[test]
fn resume_keeps_the_kept_lines_byte_for_byte() {
    let dir = fresh("bytes");
    let run = RunDir::create(&dir, &json!({"task": "colors"})).unwrap();
    drop(run);
    // Lines as any writer may leave them: fragile floats, keys in any order, spaces, an exponent
    // with a capital E, and a last line cut short by a kill.
    let mut metrics = String::new();
    for (u, x) in FRAGILE_FLOATS.iter().enumerate() {
        metrics.push_str(&format!(
            "{{\"update\":{},\"approx_kl\":{x},\"kl_coef\":5E-5, \"a\": 0.10}}\n",
            u + 1
        ));
    }
    let episodes =
        "{\"update\":1,\"reward\":1.2350075938893521e-6}\n{\"update\":3,\"reward\":0.5}\n";
    std::fs::write(
        dir.join(METRICS),
        format!("{metrics}{{\"update\":5,\"appro"),
    )
    .unwrap();
    std::fs::write(dir.join(EPISODES), episodes).unwrap();
    std::fs::create_dir(dir.join("step-2")).unwrap();
    std::fs::write(dir.join(LATEST), "step-2\n").unwrap();

    let mut r = RunDir::resume(&dir).unwrap();
    r.dir.truncate_after(2).unwrap();
    let kept: String = metrics.lines().take(2).map(|l| format!("{l}\n")).collect();
    assert_eq!(std::fs::read_to_string(dir.join(METRICS)).unwrap(), kept);
    assert_eq!(
        std::fs::read_to_string(dir.join(EPISODES)).unwrap(),
        episodes.lines().next().unwrap().to_string() + "\n"
    );
    // Appends go on after the kept bytes, on a line of their own.
    r.dir.append_metrics(&json!({"update": 3})).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join(METRICS)).unwrap(),
        kept + "{\"update\":3}\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Everything we write as JSON and read back (trainer state, configs, caches, reports) reads its
/// floats exactly: a resumed run's KL coefficient is the one that was saved, to the last bit.
#[test]
fn json_we_read_back_keeps_every_float_bit() {
    let dir = fresh("floats");
    std::fs::create_dir_all(&dir).unwrap();
    let want: Vec<f64> = FRAGILE_FLOATS.iter().map(|s| s.parse().unwrap()).collect();
    save_state(&dir, &[], &json!({ "kl_coef": want[0], "values": want })).unwrap();
    let (_, rest) = load_state(&dir).unwrap();
    assert_eq!(
        rest["kl_coef"].as_f64().unwrap().to_bits(),
        want[0].to_bits()
    );
    let got: Vec<f64> = serde_json::from_value(rest["values"].clone()).unwrap();
    assert_eq!(
        got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn old_checkpoints_are_pruned_and_the_latest_is_kept() {
    let dir = fresh("prune");
    let run = RunDir::create(&dir, &json!({})).unwrap();
    for step in [10, 20, 30, 40] {
        run.write_checkpoint(step, |d| {
            std::fs::write(d.join("model.safetensors"), format!("{step}")).unwrap();
            Ok(())
        })
        .unwrap();
        run.prune_checkpoints(2).unwrap();
    }
    let mut steps: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    steps.sort();
    assert_eq!(steps, ["step-30", "step-40"]);
    assert_eq!(latest_checkpoint(&dir).unwrap().unwrap().0, 40);
    // A resumed run that rewrote an earlier step keeps the step `latest` names, even when it is
    // not among the newest by number.
    run.write_checkpoint(5, |_| Ok(())).unwrap();
    run.prune_checkpoints(1).unwrap();
    assert!(dir.join("step-5").is_dir());
    assert_eq!(latest_checkpoint(&dir).unwrap().unwrap().0, 5);
    // 0 keeps everything.
    run.write_checkpoint(50, |_| Ok(())).unwrap();
    run.prune_checkpoints(0).unwrap();
    assert!(dir.join("step-5").is_dir() && dir.join("step-50").is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
}
