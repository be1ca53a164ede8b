//! `pgsrm reward`: shaped rewards for (parent, child) answer pairs, as JSON.

use anyhow::{Context, Result, bail};
use pgsrm::assets;
use pgsrm::reward::Embedder;
use pgsrm::reward::api_embedder::ApiEmbedder;
use pgsrm::reward::embedder::{self, EmbedderOptions};
use pgsrm::reward::http::ApiConfig;
use pgsrm::reward::shaping::{self, DEFAULT_POWER, Shaping};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// The asset name of all-MiniLM-L6-v2, the default embedder.
const MINILM_ASSET: &str = "all-minilm-l6-v2";

#[derive(clap::Args)]
pub struct Args {
    /// The parent's (reference) answer
    #[arg(long, requires = "child", conflicts_with = "pairs")]
    parent: Option<String>,
    /// The child's (sampled) answer
    #[arg(long, requires = "parent")]
    child: Option<String>,
    /// A JSON Lines file of {"parent": "...", "child": "..."} pairs
    #[arg(long, value_name = "FILE")]
    pairs: Option<PathBuf>,
    /// Shaping: pgsrm, truncate, euclidean or binary
    #[arg(long, default_value = "pgsrm", conflicts_with = "all")]
    shaping: String,
    /// Sharpening exponent of the pgsrm and truncate shapings
    #[arg(long, default_value_t = DEFAULT_POWER)]
    power: f32,
    /// Every shaping at once
    #[arg(long)]
    all: bool,
    /// Embedder: minilm, sentence, static, word-vectors, or api (an OpenAI-compatible endpoint)
    #[arg(long, default_value = "minilm")]
    embedder: String,
    /// Sentence-transformers folder for minilm, static and sentence (default: the all-MiniLM-L6-v2
    /// asset, fetched if needed)
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Numberbatch-format word-vector file for word-vectors
    #[arg(long, value_name = "FILE")]
    vectors: Option<PathBuf>,
    #[command(flatten)]
    api: Box<ApiArgs>,
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

#[derive(serde::Deserialize)]
struct PairLine {
    parent: String,
    child: String,
}

fn read_pairs(path: &PathBuf) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading pairs file {}", path.display()))?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: PairLine = serde_json::from_str(line).with_context(|| {
            format!(
                "pairs file {} line {}: expected {{\"parent\": \"...\", \"child\": \"...\"}}",
                path.display(),
                i + 1
            )
        })?;
        pairs.push((p.parent, p.child));
    }
    if pairs.is_empty() {
        bail!("pairs file {} holds no pairs", path.display());
    }
    Ok(pairs)
}

fn make_embedder(args: &Args) -> Result<Box<dyn Embedder>> {
    match args.embedder.as_str() {
        "api" | "openai" => {
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
        other => local_embedder(args, other),
    }
}

/// The local embedders (MiniLM, sentence encoders, static mean, word vectors).
fn local_embedder(args: &Args, name: &str) -> Result<Box<dyn Embedder>> {
    let mut opts = EmbedderOptions {
        model_dir: args.model_dir.clone(),
        vectors: args.vectors.clone(),
        ..EmbedderOptions::default()
    };
    if opts.model_dir.is_none() && matches!(name, "minilm" | "all-minilm-l6-v2" | "static") {
        opts.model_dir = Some(assets::resolve_dir(MINILM_ASSET)?);
    }
    embedder::by_name(name, &opts)
}

pub fn run(args: Args) -> Result<()> {
    if !args.power.is_finite() || args.power < 0.0 {
        bail!("--power must be a finite number >= 0, got {}", args.power);
    }
    let shapings: Vec<Shaping> = if args.all {
        Shaping::ALL.to_vec()
    } else {
        vec![Shaping::from_name(&args.shaping).context("--shaping")?]
    };
    let pairs = match (&args.parent, &args.child, &args.pairs) {
        (Some(p), Some(c), None) => vec![(p.clone(), c.clone())],
        (None, None, Some(path)) => read_pairs(path)?,
        _ => bail!("give either --parent and --child, or --pairs FILE"),
    };
    let need_vectors = shapings.iter().any(|s| s.needs_embeddings());
    let (embedder_name, vectors) = if need_vectors {
        let embedder =
            make_embedder(&args).with_context(|| format!("--embedder {}", args.embedder))?;
        let texts: Vec<&str> = pairs
            .iter()
            .flat_map(|(p, c)| [p.as_str(), c.as_str()])
            .collect();
        let v = embedder.embed(&texts)?;
        if v.len() != texts.len() {
            bail!(
                "embedder {} returned {} vectors for {} texts",
                embedder.name(),
                v.len(),
                texts.len()
            );
        }
        (Some(embedder.name()), v)
    } else {
        (None, Vec::new())
    };
    let empty: Vec<f32> = Vec::new();
    let results: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (p, c))| {
            let (vp, vc) = if need_vectors {
                (&vectors[2 * i], &vectors[2 * i + 1])
            } else {
                (&empty, &empty)
            };
            let rewards: serde_json::Map<String, serde_json::Value> = shapings
                .iter()
                .map(|s| {
                    (
                        s.name().to_string(),
                        json!(s.reward(args.power, p, c, vp, vc)),
                    )
                })
                .collect();
            let mut row = json!({"parent": p, "child": c, "rewards": rewards});
            if need_vectors {
                row["cosine"] = json!(shaping::cosine(vp, vc));
            }
            row
        })
        .collect();
    let out = json!({
        "embedder": embedder_name,
        "power": args.power,
        "shapings": shapings.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "pairs": results,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
