//! What `--model` accepts, and loading it with its tokenizer:
//! - a path to a checkpoint folder (`config.json`, `model.safetensors`, optionally `tokenizer.json`);
//! - a Hugging Face name (`gpt2`, `gpt2-large`, `org/name`) found in our cache, the local Hugging
//!   Face cache, or downloaded from `$HF_ENDPOINT` when that is set;
//! - `random:<config>[:seed]`, a seeded GPT-2 init of a named config (`tiny`, `small`, ...).
//!
//! A model without its own tokenizer files gets GPT-2's (the `gpt2-tokenizer` asset).

use crate::assets::Locations;
use crate::model::gpt2::{Gpt2, Gpt2Config, NAMED_CONFIGS};
use crate::model::io::load_gpt2;
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

/// A model of any family we run. Only GPT-2 so far; the Llama family joins here.
#[derive(Clone, Debug)]
pub enum Model {
    Gpt2(Gpt2),
}

impl Model {
    pub fn family(&self) -> &'static str {
        match self {
            Model::Gpt2(_) => "gpt2",
        }
    }

    pub fn num_params(&self) -> usize {
        match self {
            Model::Gpt2(m) => m.weights.num_params(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Model::Gpt2(m) => m.config.vocab_size,
        }
    }
}

/// A loaded model, its tokenizer, and where both came from (for logs and run configs).
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub source: String,
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
            Ok(Loaded {
                model: Model::Gpt2(Gpt2::random(cfg, seed)),
                tokenizer,
                source: format!("random init of GPT-2 config '{config}', seed {seed}"),
            })
        }
        ModelSpec::Path(p) => load_dir(&p, loc).with_context(|| format!("--model {spec}")),
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

fn load_dir(dir: &Path, loc: &Locations) -> Result<Loaded> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder (a checkpoint folder holds config.json and model.safetensors)",
            dir.display()
        );
    }
    let model = Model::Gpt2(load_gpt2(dir)?);
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
    })
}
