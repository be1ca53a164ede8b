//! `pgsrm embed`.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`pgsrm embed` is not built yet")
}
