//! `pgsrm tasks`.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`pgsrm tasks` is not built yet")
}
