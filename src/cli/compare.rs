//! `pgsrm compare`: plots and a table comparing any runs.

use anyhow::Result;
use pgsrm::run::report::{Group, RunCurves, write_report};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run folders to compare
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<PathBuf>,
    /// Folder for report.md, summary.json and the plots
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Draw runs trained with the same reward as one curve (mean, band over runs)
    #[arg(long)]
    by_reward: bool,
}

pub fn run(args: Args) -> Result<()> {
    let curves: Vec<RunCurves> = args
        .runs
        .iter()
        .map(|p| RunCurves::load(p))
        .collect::<Result<_>>()?;
    let groups = if args.by_reward {
        group_by_reward(&curves)
    } else {
        curves
            .iter()
            .map(|c| Group {
                name: c.name.clone(),
                runs: vec![c],
            })
            .collect()
    };
    write_report(&groups, &args.out, "Run comparison", "")?;
    eprintln!(
        "wrote {} (plots: reward, kl, entropy as .svg and .png)",
        args.out.join("report.md").display()
    );
    Ok(())
}

/// One group per reward shaping, in the order first seen.
pub fn group_by_reward(curves: &[RunCurves]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group> = Vec::new();
    for c in curves {
        let name = c.reward().unwrap_or("unknown").to_string();
        match groups.iter_mut().find(|g| g.name == name) {
            Some(g) => g.runs.push(c),
            None => groups.push(Group {
                name,
                runs: vec![c],
            }),
        }
    }
    groups
}
