//! `pgsrm reward`: shaped rewards for (parent, child) answer pairs, as JSON.

use super::embedder_args::EmbedderArgs;
use anyhow::{Context, Result, bail};
use pgsrm::reward::shaping::{self, DEFAULT_POWER, Shaping};
use serde_json::json;
use std::path::PathBuf;

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
    #[command(flatten)]
    embedder: EmbedderArgs,
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
        let embedder = args
            .embedder
            .build()
            .with_context(|| format!("--embedder {}", args.embedder.embedder))?;
        let texts: Vec<&str> = pairs
            .iter()
            .flat_map(|(p, c)| [p.as_str(), c.as_str()])
            .collect();
        let v = pgsrm::reward::embed_texts(embedder.as_ref(), &texts)?;
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
