//! SmolLM2-135M-Instruct from its GGUF file against `transformers` loading the same file
//! (tests/fixtures/smollm2, made by scripts/make_fixtures.py): token ids of varied texts, the chat
//! template, and next-token log-probabilities.

use pgsrm::batch::Batch;
use pgsrm::cpu::llama::{argmax, forward, generate_with, log_softmax};
use pgsrm::model::llama::{Llama, SMOLLM2_ASSET, load_gguf_child};
use pgsrm::model::llama_tokenizer::{ChatMessage, LlamaTokenizer};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/smollm2")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// The model through the project's asset resolution, loaded once for all tests.
fn loaded() -> &'static (Llama, LlamaTokenizer) {
    static M: OnceLock<(Llama, LlamaTokenizer)> = OnceLock::new();
    M.get_or_init(|| load_gguf_child(SMOLLM2_ASSET).unwrap())
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_config_from_gguf() {
    let (m, tok) = loaded();
    let c = &m.config;
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.n_kv_heads()
        ),
        (30, 576, 9, 3)
    );
    assert_eq!(
        (c.intermediate_size, c.vocab_size, c.head_dim()),
        (1536, 49152, 64)
    );
    assert_eq!(c.rope_theta, 100000.0);
    assert!(c.tie_word_embeddings && m.weights.lm_head.is_none());
    assert_eq!(
        (tok.bos_id, tok.eos_id, tok.pad_id),
        (Some(1), Some(2), Some(2))
    );
    assert_eq!(tok.vocab_size(), 49152);
}

#[test]
fn smollm2_token_ids_match_transformers() {
    let (_, tok) = loaded();
    let f = fixture("tokens.json");
    let texts = f["texts"].as_array().unwrap();
    assert!(texts.len() >= 30);
    for t in texts {
        let text = t["text"].as_str().unwrap();
        let want = ids_of(&t["ids"]);
        assert_eq!(tok.encode(text).unwrap(), want, "ids of {text:?}");
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            t["decoded"].as_str().unwrap(),
            "decoding {text:?}"
        );
    }
}

/// The tokenizer saved as tokenizer.json reads back (through the GPT-2 side's tokenizer type)
/// into the same ids.
#[test]
fn smollm2_saved_tokenizer_gives_the_same_ids() {
    let (_, tok) = loaded();
    let dir = std::env::temp_dir().join(format!("pgsrm-smol-tok-{}", std::process::id()));
    tok.save_hf(&dir).unwrap();
    let back = pgsrm::model::tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["eos_token"], "<|im_end|>");
    assert_eq!(cfg["chat_template"].as_str(), tok.chat_template.as_deref());
    for t in fixture("tokens.json")["texts"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        assert_eq!(back.encode(text).unwrap(), ids_of(&t["ids"]), "{text:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn smollm2_next_token_logprobs_match_transformers() {
    let (m, tok) = loaded();
    let f = fixture("logprobs.json");
    let prompts = f["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 10);
    for p in prompts {
        let text = p["text"].as_str().unwrap();
        if p["chat"].as_bool().unwrap() {
            let msg = [ChatMessage::new("user", p["message"].as_str().unwrap())];
            assert_eq!(tok.apply_chat_template(&msg, true).unwrap(), text);
        }
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, ids_of(&p["ids"]), "ids of {text:?}");
        let batch = Batch::left_padded(std::slice::from_ref(&ids), 2).unwrap();
        let logits = forward(m, &batch, &[(0, ids.len() - 1)]).unwrap().0.data;
        let lp = log_softmax(&logits);
        for key in ["top", "fixed"] {
            let want_ids = ids_of(&p[format!("{key}_ids").as_str()]);
            let want = p[format!("{key}_logprobs").as_str()].as_array().unwrap();
            for (&i, w) in want_ids.iter().zip(want) {
                let w = w.as_f64().unwrap() as f32;
                let got = lp[i as usize];
                assert!(
                    (got - w).abs() < 1e-3,
                    "{text:?}: log p(token {i}) = {got}, transformers {w}"
                );
            }
        }
        assert_eq!(
            argmax(&logits),
            ids_of(&p["top_ids"])[0],
            "{text:?}: top token"
        );
    }
}

/// Greedy decoding through the KV cache, on a left-padded batch, gives the tokens and log-probs
/// that full forwards over the growing sequences give.
#[test]
fn smollm2_greedy_cache_equals_full_forward() {
    let (m, tok) = loaded();
    let prompts: Vec<Vec<u32>> = ["The capital of France is", "1, 2, 3,"]
        .iter()
        .map(|t| tok.encode(t).unwrap())
        .collect();
    let batch = Batch::left_padded(&prompts, 2).unwrap();
    let out = generate_with(m, &batch, 6, None, |_, row| argmax(row)).unwrap();
    for (bi, p) in prompts.iter().enumerate() {
        let mut seq = p.clone();
        for (step, (&tokn, &lp)) in out.tokens[bi].iter().zip(&out.logprobs[bi]).enumerate() {
            let b1 = Batch::left_padded(std::slice::from_ref(&seq), 2).unwrap();
            let logits = forward(m, &b1, &[(0, seq.len() - 1)]).unwrap().0.data;
            assert_eq!(tokn, argmax(&logits), "row {bi} step {step}");
            let want = log_softmax(&logits)[tokn as usize];
            assert!(
                (lp - want).abs() < 1e-3,
                "row {bi} step {step}: {lp} vs {want}"
            );
            seq.push(tokn);
        }
    }
}
