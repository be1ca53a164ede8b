//! `pgsrm score` and `pgsrm generate` through the binary, on a seeded random GPT-2.

use std::process::Command;

fn pgsrm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(args)
        .output()
        .expect("run pgsrm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn score_prints_one_logprob_per_token_and_their_sum() {
    let (ok, out, err) = pgsrm(&[
        "score",
        "--model",
        "random:tiny:5",
        "--text",
        "Hello there, world",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids = v["ids"].as_array().unwrap();
    let lps: Vec<f64> = v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(ids.len(), lps.len());
    assert_eq!(v["tokens"].as_array().unwrap().len(), ids.len());
    // A random init is close to uniform over GPT-2's 50257 tokens.
    for lp in &lps {
        assert!((lp + (50257f64).ln()).abs() < 1.0, "{lp}");
    }
    assert!((v["sum"].as_f64().unwrap() - lps.iter().sum::<f64>()).abs() < 1e-3);

    let (ok, out, _) = pgsrm(&[
        "score",
        "--model",
        "random:tiny:5",
        "--text",
        "Hello there, world",
        "--no-bos",
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["logprobs"][0].is_null(),
        "without a start token the first token is not scored"
    );
    assert_eq!(v["scored"].as_u64().unwrap() as usize, ids.len() - 1);
}

#[test]
fn generate_is_seeded_and_rejects_bad_input() {
    let run = |seed: &str| {
        pgsrm(&[
            "generate",
            "--model",
            "random:tiny:5",
            "--prompt",
            "Once upon a time",
            "--num-samples",
            "3",
            "--max-new-tokens",
            "6",
            "--seed",
            seed,
            "--json",
        ])
    };
    let (ok, a, err) = run("11");
    assert!(ok, "{err}");
    let (_, b, _) = run("11");
    let (_, c, _) = run("12");
    assert_eq!(a, b, "same seed, same samples");
    assert_ne!(a, c, "another seed, other samples");
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    for s in v["samples"].as_array().unwrap() {
        let n = s["ids"].as_array().unwrap().len();
        assert!((1..=6).contains(&n));
        assert_eq!(s["logprobs"].as_array().unwrap().len(), n);
    }

    let long = "word ".repeat(1100);
    let (ok, _, err) = pgsrm(&["generate", "--model", "random:tiny", "--prompt", &long]);
    assert!(!ok);
    assert!(err.contains("exceeds the model's context"), "{err}");
    let (ok, _, err) = pgsrm(&[
        "generate",
        "--model",
        "random:tiny",
        "--prompt",
        "hi",
        "--chat",
    ]);
    assert!(!ok);
    assert!(err.contains("no chat template"), "{err}");
    let (ok, _, err) = pgsrm(&[
        "generate",
        "--model",
        "random:tiny",
        "--prompt",
        "hi",
        "--top-p",
        "0",
    ]);
    assert!(!ok);
    assert!(err.contains("--top-p"), "{err}");
    let (ok, _, err) = pgsrm(&["score", "--model", "random:nope", "--text", "hi"]);
    assert!(!ok);
    assert!(err.contains("tiny, small"), "{err}");
}
