//! The flags that choose an embedder, shared by `pgsrm reward` and `pgsrm embed`.

use anyhow::{Result, bail};
use pgsrm::assets;
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::reward::Embedder;
use pgsrm::reward::api_embedder::ApiEmbedder;
use pgsrm::reward::embedder::{self, EmbedderOptions, MINILM_ASSET};
use pgsrm::reward::http::ApiConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct EmbedderArgs {
    /// Embedder: minilm, sentence, static, word-vectors, or api (an OpenAI-compatible endpoint)
    #[arg(long, default_value = "minilm")]
    pub embedder: String,
    /// Sentence-transformers folder for minilm, static and sentence (default: the all-MiniLM-L6-v2
    /// asset, fetched if needed)
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Numberbatch-format word-vector file for word-vectors
    #[arg(long, value_name = "FILE")]
    vectors: Option<PathBuf>,
    #[command(flatten)]
    api: Box<ApiArgs>,
    /// Where the models run (of the embedders, the sentence encoders): auto (a CUDA GPU when
    /// present, else the CPU), cpu, cuda, or emu (the emulated device, which runs the CUDA kernels
    /// on the CPU to check them)
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Flags of `--embedder api`.
#[derive(clap::Args)]
struct ApiArgs {
    /// Base URL of the OpenAI-compatible endpoint for `--embedder api`
    #[arg(long, default_value = "https://api.openai.com/v1")]
    api_base: String,
    /// Embedding model for `--embedder api`
    #[arg(long, default_value = "text-embedding-3-large")]
    api_model: String,
    /// Environment variable holding the API key
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// JSON Lines cache of API vectors, kept across runs
    #[arg(long, value_name = "FILE")]
    api_cache: Option<PathBuf>,
    /// Timeout of one API request, in seconds
    #[arg(long, default_value_t = 60.0)]
    api_timeout: f64,
}

impl EmbedderArgs {
    /// The embedder the flags name, its sentence encoder on `--device` (opened here: the
    /// commands that only embed open no other device). The other embedders run on the host and
    /// refuse a device.
    pub fn build(&self) -> Result<Box<dyn Embedder>> {
        if matches!(self.device, DeviceChoice::Cuda | DeviceChoice::Emu)
            && !embedder::is_sentence_encoder(&self.embedder)
        {
            bail!(
                "--device {}: only the sentence encoders (minilm, sentence) run on a device; \
                 embedder '{}' runs on the CPU",
                format!("{:?}", self.device).to_lowercase(),
                self.embedder
            );
        }
        self.build_on(&Device::open(self.device, 0)?)
    }

    /// The embedder the flags name, its sentence encoder on `device` (the device the command's
    /// models run on), the other embedders on the host.
    pub fn build_on(&self, device: &Device) -> Result<Box<dyn Embedder>> {
        match self.embedder.as_str() {
            "api" | "openai" => api_embedder(self),
            other => local_embedder(self, other, device),
        }
    }
}

fn api_embedder(args: &EmbedderArgs) -> Result<Box<dyn Embedder>> {
    if !(args.api.api_timeout.is_finite() && args.api.api_timeout > 0.0) {
        bail!("--api-timeout must be a positive number of seconds");
    }
    let config = ApiConfig {
        base_url: args.api.api_base.clone(),
        api_key_env: args.api.api_key_env.clone(),
        timeout: Duration::from_secs_f64(args.api.api_timeout),
        ..ApiConfig::default()
    };
    Ok(Box::new(ApiEmbedder::new(
        config,
        &args.api.api_model,
        None,
        args.api.api_cache.clone(),
    )?))
}

/// The local embedders (MiniLM, sentence encoders, static mean, word vectors).
fn local_embedder(args: &EmbedderArgs, name: &str, device: &Device) -> Result<Box<dyn Embedder>> {
    let mut opts = EmbedderOptions {
        model_dir: args.model_dir.clone(),
        vectors: args.vectors.clone(),
        encoders: Some(device.encoders()),
        ..EmbedderOptions::default()
    };
    if opts.model_dir.is_none() && matches!(name, "minilm" | "all-minilm-l6-v2" | "static") {
        opts.model_dir = Some(assets::resolve_dir(MINILM_ASSET)?);
    }
    embedder::by_name(name, &opts)
}
