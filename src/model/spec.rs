//! What `--model` accepts, and loading it with its tokenizer:
//! - a path to a checkpoint folder (`config.json`, `model.safetensors`, optionally `tokenizer.json`);
//! - a Hugging Face name (`gpt2`, `gpt2-large`, `org/name`) found in our cache, the local Hugging
//!   Face cache, or downloaded from `$HF_ENDPOINT` when that is set;
//! - `random:<config>[:seed]`, a seeded GPT-2 init of a named config (`tiny`, `small`, ...);
//! - a Llama-family child: a `.gguf` file, a Hugging Face Llama folder (`model_type` llama), or the
//!   asset `smollm2-135m-instruct` (SmolLM2-135M-Instruct, fetched by the asset code).
//!
//! A model without its own tokenizer files gets GPT-2's (the `gpt2-tokenizer` asset).

use crate::assets::Locations;
use crate::files::{replace_dir, temp_sibling, write_atomic};
use crate::model::gpt2::{Gpt2, Gpt2Config, NAMED_CONFIGS};
use crate::model::io::{load_gpt2, save_gpt2};
use crate::model::llama::{Llama, SMOLLM2_ASSET, load_gguf_child};
use crate::model::llama_tokenizer::{ChatMessage, apply_chatml};
use crate::model::tokenizer::Tokenizer;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    Path(PathBuf),
    Hub(String),
    Random { config: String, seed: u64 },
}

impl ModelSpec {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("random:") {
            let (config, seed) = match rest.split_once(':') {
                Some((c, seed)) => {
                    let seed = seed.parse::<u64>().with_context(|| {
                        format!("--model {s}: the seed '{seed}' is not a non-negative integer")
                    })?;
                    (c, seed)
                }
                None => (rest, 0),
            };
            if !NAMED_CONFIGS.contains(&config) {
                bail!(
                    "--model {s}: unknown config '{config}': expected one of {}",
                    NAMED_CONFIGS.join(", ")
                );
            }
            return Ok(ModelSpec::Random {
                config: config.to_string(),
                seed,
            });
        }
        if s.is_empty() {
            bail!("--model is empty: give a folder, a Hugging Face name or random:<config>[:seed]");
        }
        let p = Path::new(s);
        if p.exists() {
            return Ok(ModelSpec::Path(p.to_path_buf()));
        }
        let looks_like_path = s.starts_with('.')
            || s.starts_with('/')
            || s.starts_with('~')
            || s.contains('\\')
            || s.matches('/').count() > 1;
        let hub_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if looks_like_path || !hub_chars {
            bail!("--model {s}: no such file or folder");
        }
        Ok(ModelSpec::Hub(s.to_string()))
    }
}

/// A model of any family we run.
#[derive(Clone, Debug)]
pub enum Model {
    Gpt2(Gpt2),
    Llama(Llama),
}

impl Model {
    pub fn family(&self) -> &'static str {
        match self {
            Model::Gpt2(_) => "gpt2",
            Model::Llama(_) => "llama",
        }
    }

    pub fn num_params(&self) -> usize {
        match self {
            Model::Gpt2(m) => m.weights.num_params(),
            Model::Llama(m) => m.weights.num_params(),
        }
    }

    /// Width of the final hidden state (what the value head reads).
    pub fn hidden_size(&self) -> usize {
        match self {
            Model::Gpt2(m) => m.config.n_embd,
            Model::Llama(m) => m.config.hidden_size,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Model::Gpt2(m) => m.config.vocab_size,
            Model::Llama(m) => m.config.vocab_size,
        }
    }
}

/// A loaded model, its tokenizer, and where both came from (for logs and run configs).
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub source: String,
    /// The token that ends a sampled answer (and pads batches).
    pub eos: u32,
    /// A token to put in front of a text so that its first token is predicted too, when the
    /// model has one: GPT-2's `<|endoftext|>`, or the BOS of a tokenizer that asks for one.
    pub bos: Option<u32>,
    /// The model's chat template, when it has one (ChatML is supported).
    pub chat_template: Option<String>,
}

impl Loaded {
    /// Writes the model and its tokenizer in the Hugging Face layout (`transformers` loads the
    /// folder as `GPT2LMHeadModel` or `LlamaForCausalLM`). The folder is built under a temporary
    /// name and renamed into place whole.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        match &self.model {
            Model::Gpt2(m) => save_gpt2(m, dir, Some(&self.tokenizer)),
            Model::Llama(m) => {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                let tmp = temp_sibling(dir, "partial");
                let written = (|| -> Result<()> {
                    m.save_hf(&tmp)?;
                    self.tokenizer.save(&tmp.join("tokenizer.json"))?;
                    let name = |id: Option<u32>| id.and_then(|i| self.tokenizer.id_to_token(i));
                    let mut cfg = serde_json::json!({
                        "tokenizer_class": "PreTrainedTokenizerFast",
                        "add_bos_token": self.bos.is_some(),
                        "add_eos_token": false,
                        "clean_up_tokenization_spaces": false,
                        "model_max_length": m.config.max_position_embeddings,
                    });
                    if let Some(t) = name(Some(self.eos)) {
                        cfg["eos_token"] = t.into();
                    }
                    if let Some(t) = name(self.bos) {
                        cfg["bos_token"] = t.into();
                    }
                    if let Some(t) = &self.chat_template {
                        cfg["chat_template"] = t.clone().into();
                    }
                    write_atomic(
                        &tmp.join("tokenizer_config.json"),
                        serde_json::to_string_pretty(&cfg)?.as_bytes(),
                    )
                })();
                if let Err(e) = written {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e.context(format!("cannot save the model to {}", dir.display())));
                }
                replace_dir(&tmp, dir)
            }
        }
    }

    /// `text` as the model's chat template writes a user turn, with the assistant's turn opened.
    pub fn chat_prompt(&self, text: &str) -> Result<String> {
        let tpl = self
            .chat_template
            .as_deref()
            .with_context(|| format!("--chat: the model {} has no chat template", self.source))?;
        apply_chatml(tpl, &[ChatMessage::new("user", text)], true)
    }
}

/// What a checkpoint saves beside the child's weights: its tokenizer, source, end and start
/// tokens and chat template. Kept apart from the weights so that a run holds no third copy of
/// the model just for these.
#[derive(Clone)]
pub struct ChildFiles {
    pub tokenizer: Tokenizer,
    pub source: String,
    pub eos: u32,
    pub bos: Option<u32>,
    pub chat_template: Option<String>,
}

impl ChildFiles {
    pub fn of(child: &Loaded) -> Self {
        ChildFiles {
            tokenizer: child.tokenizer.clone(),
            source: child.source.clone(),
            eos: child.eos,
            bos: child.bos,
            chat_template: child.chat_template.clone(),
        }
    }

    /// These files with `model` as the weights.
    pub fn with_model(&self, model: Model) -> Loaded {
        Loaded {
            model,
            tokenizer: self.tokenizer.clone(),
            source: self.source.clone(),
            eos: self.eos,
            bos: self.bos,
            chat_template: self.chat_template.clone(),
        }
    }
}

/// Load `--model` with the default locations.
pub fn load_model(spec: &str) -> Result<Loaded> {
    load_model_with(spec, &Locations::from_env())
}

/// Hub repositories a short name may live under: `gpt2` is also `openai-community/gpt2`.
fn hub_candidates(name: &str) -> Vec<String> {
    if name.contains('/') {
        vec![name.to_string()]
    } else {
        vec![name.to_string(), format!("openai-community/{name}")]
    }
}

pub fn load_model_with(spec: &str, loc: &Locations) -> Result<Loaded> {
    match ModelSpec::parse(spec)? {
        ModelSpec::Random { config, seed } => {
            let cfg = Gpt2Config::named(&config)?;
            let tokenizer = gpt2_tokenizer(loc)?;
            let eos = cfg.eos_token_id;
            Ok(Loaded {
                model: Model::Gpt2(Gpt2::random(cfg, seed)),
                tokenizer,
                source: format!("random init of GPT-2 config '{config}', seed {seed}"),
                eos,
                bos: Some(eos),
                chat_template: None,
            })
        }
        ModelSpec::Path(p) if p.extension().is_some_and(|e| e == "gguf") => {
            load_gguf(&p.display().to_string()).with_context(|| format!("--model {spec}"))
        }
        ModelSpec::Path(p) => load_dir(&p, loc).with_context(|| format!("--model {spec}")),
        ModelSpec::Hub(name) if name == SMOLLM2_ASSET => {
            load_gguf(&name).with_context(|| format!("--model {spec}"))
        }
        ModelSpec::Hub(name) => {
            let repos = hub_candidates(&name);
            let repos: Vec<&str> = repos.iter().map(String::as_str).collect();
            let dir = loc
                .resolve_hub_repo(&repos, &["config.json", "model.safetensors"])
                .with_context(|| format!("--model {spec}"))?;
            let mut loaded = load_dir(&dir, loc).with_context(|| format!("--model {spec}"))?;
            loaded.source = format!("{name} ({})", dir.display());
            Ok(loaded)
        }
    }
}

fn gpt2_tokenizer(loc: &Locations) -> Result<Tokenizer> {
    let path = loc.resolve_file("gpt2-tokenizer", "tokenizer.json")?;
    Tokenizer::from_file(&path)
}

/// A Llama-family child from a GGUF file or the SmolLM2 asset, with the tokenizer of its metadata.
fn load_gguf(name_or_path: &str) -> Result<Loaded> {
    let (model, lt) = load_gguf_child(name_or_path)?;
    let eos = lt
        .eos_id
        .context("the GGUF file names no end-of-sequence token")?;
    Ok(Loaded {
        bos: if lt.add_bos { lt.bos_id } else { None },
        chat_template: lt.chat_template.clone(),
        tokenizer: Tokenizer::from_hf(lt.tokenizer),
        model: Model::Llama(model),
        source: name_or_path.to_string(),
        eos,
    })
}

/// `model_type` of a checkpoint folder's config.json: "gpt2" when absent (old GPT-2 configs have
/// none) or when the file cannot be read, so that the GPT-2 loader reports the problem in full.
fn model_type(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| {
            v.get("model_type")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "gpt2".to_string())
}

/// A Hugging Face Llama folder: weights and config, `tokenizer.json`, and the chat template of
/// `tokenizer_config.json` when there is one.
fn load_llama_dir(dir: &Path) -> Result<Loaded> {
    let model = Llama::load_hf(dir)?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        bail!(
            "{} has no tokenizer.json, which a Llama-family folder needs",
            dir.display()
        );
    }
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let cfg_path = dir.join("tokenizer_config.json");
    let tcfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?,
        Err(_) => serde_json::Value::Null,
    };
    let token = |key: &str| {
        tcfg.get(key)
            .and_then(|v| v.as_str())
            .and_then(|t| tokenizer.token_to_id(t))
    };
    let eos = token("eos_token")
        .or(tokenizer.eos_id())
        .with_context(|| format!("{}: no end-of-sequence token", dir.display()))?;
    let add_bos = tcfg
        .get("add_bos_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    Ok(Loaded {
        bos: if add_bos { token("bos_token") } else { None },
        chat_template: tcfg
            .get("chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        eos,
        model: Model::Llama(model),
        tokenizer,
        source: dir.display().to_string(),
    })
}

fn load_dir(dir: &Path, loc: &Locations) -> Result<Loaded> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder (a checkpoint folder holds config.json and model.safetensors)",
            dir.display()
        );
    }
    if model_type(dir) == "llama" {
        return load_llama_dir(dir);
    }
    let gpt2 = load_gpt2(dir)?;
    let eos = gpt2.config.eos_token_id;
    let model = Model::Gpt2(gpt2);
    let tokenizer = if dir.join("tokenizer.json").is_file() {
        Tokenizer::from_file(&dir.join("tokenizer.json"))?
    } else if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
        Tokenizer::from_gpt2_bpe(&dir.join("vocab.json"), &dir.join("merges.txt"))?
    } else {
        gpt2_tokenizer(loc).context("the folder has no tokenizer.json, so GPT-2's is used")?
    };
    if tokenizer.vocab_size() > model.vocab_size() {
        bail!(
            "the tokenizer has {} tokens but the model's vocabulary has {}",
            tokenizer.vocab_size(),
            model.vocab_size()
        );
    }
    Ok(Loaded {
        model,
        tokenizer,
        source: dir.display().to_string(),
        eos,
        bos: Some(eos),
        chat_template: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_of_model_value() {
        assert_eq!(
            ModelSpec::parse("random:tiny").unwrap(),
            ModelSpec::Random {
                config: "tiny".into(),
                seed: 0
            }
        );
        assert_eq!(
            ModelSpec::parse("random:small:42").unwrap(),
            ModelSpec::Random {
                config: "small".into(),
                seed: 42
            }
        );
        let e = ModelSpec::parse("random:huge").unwrap_err().to_string();
        assert!(e.contains("tiny, small, medium, large, xl"), "{e}");
        let e = ModelSpec::parse("random:tiny:-1").unwrap_err().to_string();
        assert!(e.contains("seed '-1'"), "{e}");
        assert_eq!(
            ModelSpec::parse("gpt2").unwrap(),
            ModelSpec::Hub("gpt2".into())
        );
        assert_eq!(
            ModelSpec::parse("openai-community/gpt2-large").unwrap(),
            ModelSpec::Hub("openai-community/gpt2-large".into())
        );
        assert_eq!(
            ModelSpec::parse("src").unwrap(),
            ModelSpec::Path("src".into())
        );
        for bad in ["./missing", "/no/such/dir", "a/b/c", "has space", ""] {
            assert!(ModelSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
