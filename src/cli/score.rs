//! `pgsrm score`.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`pgsrm score` is not built yet")
}
