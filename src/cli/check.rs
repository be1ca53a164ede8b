//! `pgsrm check`: runs every CUDA kernel against its CPU reference and prints a table.

use anyhow::{Result, bail};
use pgsrm::check;
use pgsrm::device::{Device, DeviceChoice};

#[derive(clap::Args)]
pub struct Args {
    /// Device to check: a CUDA GPU, or the emulated device (`emu`), which also runs every kernel
    /// under three thread schedules (warps one after another, both ways, and threads shuffled)
    /// and requires the same bits; `cpu` has no kernels to check
    #[arg(long, value_enum, default_value = "cuda")]
    device: DeviceChoice,
    /// CUDA device ordinal
    #[arg(long, default_value_t = 0)]
    ordinal: usize,
    /// Seed of the random inputs
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the rows as JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Also write the rows as JSON to this file (one run gives both the table and the data)
    #[arg(long, value_name = "FILE")]
    save: Option<std::path::PathBuf>,
    /// Run only the rows whose kernel name contains this text (e.g. `sgemm`, `attention`), so a
    /// slow tool such as compute-sanitizer's racecheck can cover a few kernels
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.device == DeviceChoice::Cpu {
        println!("the CPU backend is the reference: nothing to check against");
        return Ok(());
    }
    let device = Device::open(args.device, args.ordinal)?;
    let Some(gpu) = device.gpu() else {
        bail!("--device auto found no CUDA device; use --device cuda or --device emu");
    };
    eprintln!("checking kernels on {} ({})", gpu.name, gpu.arch);
    let rows = check::run_filtered(gpu, args.seed, args.filter.as_deref())?;
    if rows.is_empty() {
        bail!(
            "--filter {:?}: no row's kernel name contains it",
            args.filter.unwrap_or_default()
        );
    }
    if let Some(p) = &args.save {
        pgsrm::files::write_atomic(p, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", check::format_table(&rows));
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    if failed > 0 {
        bail!("{failed} of {} kernel checks failed", rows.len());
    }
    eprintln!("all {} kernel checks passed", rows.len());
    Ok(())
}
