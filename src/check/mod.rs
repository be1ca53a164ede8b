//! `pgsrm check`: every kernel against its CPU reference on fresh random inputs at several shapes,
//! edge tiles included, then whole GPT-2, Llama and BERT passes against the CPU backend. It sits
//! above both backends: the table's machinery in `table`, the rows in one file per group (`ops`
//! the forward ops, `sgemm` every product kernel, `backward`, `ppo` the losses and optimiser,
//! `models` the decoders and the encoder, `train` whole training passes).
//! Outputs are poisoned with NaN before each launch, so an element a kernel never writes fails.
//! A case passes when max |device - cpu| <= tol * max(1, max |cpu|) (the table shows that error
//! both absolute and relative to the largest reference value) and when another run gives the
//! same bits. On the emulated device each case runs under three schedules (`table::schedules`)
//! with other poison bytes, so a missing barrier, a race or a read of unwritten memory changes the
//! bits; the emulated device also gets smaller model shapes.

mod backward;
mod models;
mod ops;
mod ppo;
mod sgemm;
mod table;
mod train;

pub use table::{CheckRow, TOL, compare, compare_parts, format_table, schedules};

use crate::cuda::device::Gpu;
use anyhow::Result;
use table::Checker;

/// Runs every case; the rows come back in order, failures included.
pub fn run_all(g: &Gpu, seed: u64) -> Result<Vec<CheckRow>> {
    run_filtered(g, seed, None)
}

/// Runs the cases with a row whose kernel name contains `filter` (all of them for `None`).
pub fn run_filtered(g: &Gpu, seed: u64, filter: Option<&str>) -> Result<Vec<CheckRow>> {
    let mut ck = Checker::new(g, seed, filter);
    ops::products(&mut ck)?;
    sgemm::run_all(&mut ck)?;
    ops::run_all(&mut ck)?;
    backward::run_all(&mut ck)?;
    ppo::run_all(&mut ck)?;
    models::run_all(&mut ck)?;
    train::run_all(&mut ck)?;
    Ok(ck.rows)
}
