//! `pgsrm reward`.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`pgsrm reward` is not built yet")
}
