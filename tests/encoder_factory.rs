//! `embedder::by_name`: every name builds its embedder from the options, and bad names or
//! missing options say what is wanted.

use pgsrm::cpu::bert::CpuEncoder;
use pgsrm::reward::embedder::{EMBEDDER_NAMES, EmbedderOptions, by_name};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn bert_tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-tiny")
}

fn err(name: &str, opts: &EmbedderOptions) -> String {
    match by_name(name, opts) {
        Ok(_) => panic!("'{name}' should be refused"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn unknown_name_lists_the_valid_ones() {
    let e = err("glove", &EmbedderOptions::default());
    assert!(e.contains("unknown embedder 'glove'"), "{e}");
    for n in EMBEDDER_NAMES {
        assert!(e.contains(n), "'{e}' should list '{n}'");
    }
}

#[test]
fn missing_options_are_named() {
    let e = err("sentence", &EmbedderOptions::default());
    assert!(e.contains("sentence-transformers"), "{e}");
    let e = err("word-vectors", &EmbedderOptions::default());
    assert!(e.contains("word-vector file"), "{e}");
    let missing = EmbedderOptions {
        vectors: Some(PathBuf::from("/nonexistent/numberbatch.txt.gz")),
        ..Default::default()
    };
    let e = err("word-vectors", &missing);
    assert!(e.contains("/nonexistent/numberbatch.txt.gz"), "{e}");
}

#[test]
fn a_sentence_encoder_needs_a_backend_to_run_on() {
    let no_backend = EmbedderOptions {
        model_dir: Some(bert_tiny()),
        ..Default::default()
    };
    let e = err("sentence", &no_backend);
    assert!(e.contains("given no backend"), "{e}");
}

#[test]
fn sentence_and_static_build_from_a_folder() {
    let opts = EmbedderOptions {
        model_dir: Some(bert_tiny()),
        encoders: Some(Arc::new(CpuEncoder)),
        ..Default::default()
    };
    let s = by_name("sentence", &opts).unwrap();
    assert_eq!(s.name(), "sentence:bert-tiny");
    assert_eq!(s.dim(), 32);
    let v = s.embed(&["the sky is blue", ""]).unwrap();
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);

    let st = by_name("static", &opts).unwrap();
    assert_eq!(st.dim(), 32);
    let v = st.embed(&["the sky is blue", ""]).unwrap();
    assert!(v[0].iter().any(|&x| x != 0.0));
    assert_eq!(v[1], vec![0.0; 32]);
}

#[test]
fn api_builds_without_a_request_when_the_dimension_is_given() {
    // Nothing listens on this port: construction and empty texts must not need the service.
    let opts = EmbedderOptions {
        api_base_url: Some("http://127.0.0.1:9/v1".into()),
        api_dim: Some(8),
        ..Default::default()
    };
    let e = by_name("api", &opts).unwrap();
    assert_eq!(e.name(), "api:text-embedding-3-large");
    assert_eq!(e.dim(), 8);
    assert_eq!(e.embed(&[""]).unwrap(), vec![vec![0.0; 8]]);
}
