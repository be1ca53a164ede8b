//! `pgsrm embed` through the binary: MiniLM vectors equal sentence-transformers' (the fixture).

use std::process::Command;

#[test]
fn embed_prints_minilm_vectors_matching_sentence_transformers() {
    let texts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/minilm/texts.json").unwrap())
            .unwrap();
    let bytes = std::fs::read("tests/fixtures/minilm/embeddings.safetensors").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let reference: Vec<f32> = st
        .tensor("embeddings")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let picks = [1usize, 2, 4];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsrm"));
    cmd.arg("embed");
    for &i in &picks {
        cmd.arg(format!("--text={}", texts[i]));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dim"], 384);
    for (k, &i) in picks.iter().enumerate() {
        assert_eq!(v["vectors"][k]["text"], texts[i]);
        let got: Vec<f64> = v["vectors"][k]["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want = &reference[i * 384..(i + 1) * 384];
        let dot: f64 = got.iter().zip(want).map(|(a, &b)| a * b as f64).sum();
        let na: f64 = got.iter().map(|a| a * a).sum::<f64>().sqrt();
        let nb: f64 = want
            .iter()
            .map(|&b| (b as f64) * (b as f64))
            .sum::<f64>()
            .sqrt();
        assert!(
            dot / (na * nb) > 0.99999,
            "text {i}: cosine {}",
            dot / (na * nb)
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(["embed", "--text", "x", "--embedder", "nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("minilm"),
        "unknown embedder lists the valid ones"
    );
}
