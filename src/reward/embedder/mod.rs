//! The embedders behind `crate::reward::Embedder`, and `by_name`, which builds one from the name
//! a user gives on the command line or in a run config.

pub mod minilm;
pub mod static_mean;
pub mod vector_cache;
pub mod word_vectors;

pub use minilm::{Encoded, EncoderBackend, EncoderPasses, MiniLm, SentenceEncoder};
pub use static_mean::StaticMean;
pub use word_vectors::WordVectors;

use crate::reward::Embedder;
use crate::reward::api_embedder::ApiEmbedder;
use crate::reward::http::ApiConfig;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::sync::Arc;

/// The names `by_name` accepts, first the default.
pub const EMBEDDER_NAMES: [&str; 5] = ["minilm", "sentence", "static", "word-vectors", "api"];

/// Where each embedder finds its files or service. Only the fields the chosen embedder needs
/// must be set.
#[derive(Clone, Debug, Default)]
pub struct EmbedderOptions {
    /// A sentence-transformers BERT folder: required by `sentence`; for `minilm` and `static`,
    /// the all-MiniLM-L6-v2 folder (when unset, the asset code finds or fetches it).
    pub model_dir: Option<PathBuf>,
    /// A Numberbatch-format word-vector file (`word-vectors`).
    pub vectors: Option<PathBuf>,
    /// OpenAI-compatible embeddings service (`api`): base URL (default OpenAI's), model (default
    /// text-embedding-3-large, the paper's), the environment variable holding the key (default
    /// OPENAI_API_KEY), and the vector length (asked of the service with one probe text when unset).
    pub api_base_url: Option<String>,
    pub api_model: Option<String>,
    pub api_key_env: Option<String>,
    pub api_dim: Option<usize>,
    /// The `api` embedder's on-disk cache file (JSON Lines), kept across runs.
    pub api_cache: Option<PathBuf>,
    /// Where the sentence encoders (`minilm`, `sentence`) run: the backend of the device the
    /// command opened. They need one; the other embedders run on the host.
    pub encoders: Option<Arc<dyn EncoderBackend>>,
}

/// The paper's sentence embedder.
pub const DEFAULT_API_MODEL: &str = "text-embedding-3-large";

/// The asset name of the default sentence encoder.
pub const MINILM_ASSET: &str = "all-minilm-l6-v2";

/// The given folder, else all-MiniLM-L6-v2 found or fetched by the asset code.
fn minilm_dir(opts: &EmbedderOptions) -> Result<PathBuf> {
    match &opts.model_dir {
        Some(d) => Ok(d.clone()),
        None => crate::assets::resolve_dir(MINILM_ASSET),
    }
}

/// Whether embedder `name` is a sentence encoder, the kind that runs on a device.
pub fn is_sentence_encoder(name: &str) -> bool {
    matches!(name, "minilm" | "all-minilm-l6-v2" | "sentence")
}

/// Builds the embedder called `name` (one of `EMBEDDER_NAMES`; `numberbatch` is another name for
/// `word-vectors`).
pub fn by_name(name: &str, opts: &EmbedderOptions) -> Result<Box<dyn Embedder>> {
    let encoders = || {
        opts.encoders.as_deref().with_context(|| {
            format!("embedder '{name}' is a sentence encoder and was given no backend to run on")
        })
    };
    match name {
        "minilm" | "all-minilm-l6-v2" => Ok(Box::new(SentenceEncoder::load(
            &minilm_dir(opts)?,
            "minilm",
            encoders()?,
        )?)),
        "sentence" => match &opts.model_dir {
            Some(d) => {
                let label = format!(
                    "sentence:{}",
                    d.file_name().unwrap_or_default().to_string_lossy()
                );
                Ok(Box::new(SentenceEncoder::load(d, &label, encoders()?)?))
            }
            None => {
                bail!("embedder 'sentence' needs the path of a sentence-transformers BERT folder")
            }
        },
        "static" => Ok(Box::new(StaticMean::load(&minilm_dir(opts)?, "static")?)),
        "word-vectors" | "numberbatch" => match &opts.vectors {
            Some(p) => Ok(Box::new(WordVectors::load(p)?)),
            None => bail!(
                "embedder '{name}' needs a word-vector file (Numberbatch text format, plain or .gz)"
            ),
        },
        "api" => {
            let mut config = ApiConfig::default();
            if let Some(u) = &opts.api_base_url {
                config.base_url = u.clone();
            }
            if let Some(k) = &opts.api_key_env {
                config.api_key_env = k.clone();
            }
            let model = opts.api_model.as_deref().unwrap_or(DEFAULT_API_MODEL);
            Ok(Box::new(ApiEmbedder::new(
                config,
                model,
                opts.api_dim,
                opts.api_cache.clone(),
            )?))
        }
        _ => bail!(
            "unknown embedder '{name}': expected one of {}",
            EMBEDDER_NAMES.join(", ")
        ),
    }
}
