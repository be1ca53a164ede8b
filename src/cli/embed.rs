//! `pgsrm embed`: texts to vectors with any embedder, as JSON.

use super::embedder_args::EmbedderArgs;
use anyhow::{Context, Result};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Texts to embed (repeat the flag, or give several values; `--text=-x` for one that starts with a dash)
    #[arg(long, num_args = 1.., required = true)]
    text: Vec<String>,
    #[command(flatten)]
    embedder: EmbedderArgs,
}

pub fn run(args: Args) -> Result<()> {
    let emb = args
        .embedder
        .build()
        .with_context(|| format!("--embedder {}", args.embedder.embedder))?;
    let texts: Vec<&str> = args.text.iter().map(String::as_str).collect();
    let vectors = pgsrm::reward::embed_texts(emb.as_ref(), &texts)?;
    let items: Vec<_> = texts
        .iter()
        .zip(&vectors)
        .map(|(t, v)| json!({"text": t, "vector": v}))
        .collect();
    println!(
        "{}",
        serde_json::to_string(
            &json!({"embedder": emb.name(), "dim": emb.dim(), "vectors": items})
        )?
    );
    Ok(())
}
