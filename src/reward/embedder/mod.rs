//! The embedders behind `crate::reward::Embedder`, and `by_name`, which builds one from the name
//! a user gives on the command line or in a run config.

pub mod minilm;
pub mod static_mean;
pub mod word_vectors;

pub use minilm::{Encoded, MiniLm, SentenceEncoder};
pub use static_mean::StaticMean;
pub use word_vectors::WordVectors;

use crate::reward::Embedder;
use anyhow::{Result, bail};
use std::path::PathBuf;

/// The names `by_name` accepts, first the default.
pub const EMBEDDER_NAMES: [&str; 5] = ["minilm", "sentence", "static", "word-vectors", "api"];

/// Where each embedder finds its files or service. Only the fields the chosen embedder needs
/// must be set.
#[derive(Clone, Debug, Default)]
pub struct EmbedderOptions {
    /// A sentence-transformers BERT folder: required by `sentence`; for `minilm` and `static`,
    /// the all-MiniLM-L6-v2 folder.
    pub model_dir: Option<PathBuf>,
    /// A Numberbatch-format word-vector file (`word-vectors`).
    pub vectors: Option<PathBuf>,
    /// OpenAI-compatible embeddings service (`api`): base URL, model, and the environment
    /// variable holding the key.
    pub api_base_url: Option<String>,
    pub api_model: Option<String>,
    pub api_key_env: Option<String>,
    /// Folder for an embedder's on-disk cache (`api`).
    pub cache_dir: Option<PathBuf>,
}

fn minilm_dir(opts: &EmbedderOptions, name: &str) -> Result<PathBuf> {
    match &opts.model_dir {
        Some(d) => Ok(d.clone()),
        None => bail!(
            "embedder '{name}' needs the all-MiniLM-L6-v2 folder (sentence-transformers layout); \
             give its path"
        ),
    }
}

/// Builds the embedder called `name` (one of `EMBEDDER_NAMES`; `numberbatch` is another name for
/// `word-vectors`).
pub fn by_name(name: &str, opts: &EmbedderOptions) -> Result<Box<dyn Embedder>> {
    match name {
        "minilm" | "all-minilm-l6-v2" => Ok(Box::new(SentenceEncoder::load(
            &minilm_dir(opts, name)?,
            "minilm",
        )?)),
        "sentence" => match &opts.model_dir {
            Some(d) => {
                let label = format!(
                    "sentence:{}",
                    d.file_name().unwrap_or_default().to_string_lossy()
                );
                Ok(Box::new(SentenceEncoder::load(d, &label)?))
            }
            None => {
                bail!("embedder 'sentence' needs the path of a sentence-transformers BERT folder")
            }
        },
        "static" => Ok(Box::new(StaticMean::load(
            &minilm_dir(opts, name)?,
            "static",
        )?)),
        "word-vectors" | "numberbatch" => match &opts.vectors {
            Some(p) => Ok(Box::new(WordVectors::load(p)?)),
            None => bail!(
                "embedder '{name}' needs a word-vector file (Numberbatch text format, plain or .gz)"
            ),
        },
        // The OpenAI-compatible embedder (src/reward/api_embedder.rs) is built here.
        "api" => bail!("the 'api' embedder is not part of this build"),
        _ => bail!(
            "unknown embedder '{name}': expected one of {}",
            EMBEDDER_NAMES.join(", ")
        ),
    }
}
