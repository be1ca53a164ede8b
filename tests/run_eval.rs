//! Held-out evaluation on `random:tiny`: a defined accuracy, answers equal to greedy decoding
//! recomputed without the KV cache, the same answers on the emulated device, and the `pgsrm eval`
//! command's JSON.

use pgsrm::batch::Batch;
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::model::spec::load_model;
use pgsrm::run::eval::evaluate;
use std::process::Command;

#[test]
fn eval_on_random_tiny_gives_a_defined_accuracy() {
    let loaded = load_model("random:tiny:3").unwrap();
    let task = pgsrm::tasks::by_name("colors").unwrap();
    let n = task.held_out().len();
    let r = evaluate(&loaded, &task, false, 2, None, n, &Device::Cpu).unwrap();
    assert_eq!(r["n"], n);
    let acc = r["exact_match"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(r["mean_reward"].is_null());
    let ex = r["examples"].as_array().unwrap();
    assert_eq!(ex.len(), n);
    let hits = ex.iter().filter(|e| e["exact"].as_bool().unwrap()).count();
    assert_eq!(acc, hits as f64 / n as f64);
    for (e, h) in ex.iter().zip(task.held_out()) {
        assert_eq!(e["prompt"], h.prompt);
        assert_eq!(e["parent"], h.answer);
        let same = e["parent"].as_str().unwrap().trim().to_lowercase()
            == e["child"].as_str().unwrap().trim().to_lowercase();
        assert_eq!(e["exact"].as_bool().unwrap(), same);
    }
    // The answers are greedy decoding: recompute them one prompt at a time without the KV
    // cache, taking the arg-max of the full forward pass at the last position.
    for e in &ex[..3] {
        let mut ids = loaded
            .tokenizer
            .encode(e["prompt"].as_str().unwrap())
            .unwrap();
        let n0 = ids.len();
        for _ in 0..2 {
            let batch = Batch::left_padded(std::slice::from_ref(&ids), loaded.eos).unwrap();
            let logits =
                pgsrm::cpu::model::logits(&loaded.model, &batch, &[(0, ids.len() - 1)]).unwrap();
            let mut best = 0;
            for (i, &v) in logits.data.iter().enumerate() {
                if v > logits.data[best] {
                    best = i;
                }
            }
            if best as u32 == loaded.eos {
                break;
            }
            ids.push(best as u32);
        }
        let text = loaded.tokenizer.decode(&ids[n0..]).unwrap();
        assert_eq!(e["child"], text);
    }
}

#[test]
fn eval_on_the_emulated_device_gives_the_cpu_answers() {
    let loaded = load_model("random:tiny:3").unwrap();
    let task = pgsrm::tasks::by_name("opposites").unwrap();
    let n = task.held_out().len();
    let cpu = evaluate(&loaded, &task, false, 2, None, n, &Device::Cpu).unwrap();
    let emu = evaluate(
        &loaded,
        &task,
        false,
        2,
        None,
        n,
        &Device::open(DeviceChoice::Emu, 0).unwrap(),
    )
    .unwrap();
    assert_eq!(cpu["device"], "cpu");
    assert!(
        emu["device"]
            .as_str()
            .unwrap()
            .starts_with("emulated device")
    );
    assert_eq!(cpu["examples"], emu["examples"]);
    assert_eq!(cpu["exact_match"], emu["exact_match"]);
}

#[test]
fn eval_command_prints_json_and_names_bad_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args([
            "eval",
            "--model",
            "random:tiny",
            "--task",
            "opposites",
            "--json",
        ])
        .args(["--examples", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["task"], "opposites");
    assert_eq!(v["examples"].as_array().unwrap().len(), 3);
    let r = v["mean_reward"].as_f64().unwrap();
    // PGSRM shaping of a cosine lies in [0, 1].
    assert!((0.0..=1.0).contains(&r), "{r}");

    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(["eval", "--run", "/nonexistent/run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--run /nonexistent/run"), "{e}");
}
