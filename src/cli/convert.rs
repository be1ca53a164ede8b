//! `pgsrm convert`: any model `--model` accepts, written as a Hugging Face folder.

use anyhow::{Result, bail};
use pgsrm::model::spec::load_model;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model to convert: a .gguf file, smollm2-135m-instruct, a checkpoint folder, a Hugging Face
    /// name in the local cache, or random:<config>[:seed]
    #[arg(long)]
    model: String,
    /// Folder to write (config.json, model.safetensors, tokenizer files)
    #[arg(long)]
    out: PathBuf,
    /// Replace the folder if it exists
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.out.exists() && !args.force {
        bail!(
            "--out {} exists; pass --force to replace it",
            args.out.display()
        );
    }
    let loaded = load_model(&args.model)?;
    loaded.save_pretrained(&args.out)?;
    eprintln!(
        "wrote {} ({}, {} parameters) to {}",
        loaded.source,
        loaded.model.family(),
        loaded.model.num_params(),
        args.out.display()
    );
    Ok(())
}
