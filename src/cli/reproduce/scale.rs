//! `--scale`: how big a reproduction's runs are, and which one a device gets by default.

use super::*;

/// How big a reproduction's runs are (`--scale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scale {
    /// `pgsrm train`'s defaults: the SmolLM2 fallback's short runs without GPT-2 weights
    Quick,
    /// the paper's batch, new tokens and 100,000 episodes per run for each task
    Paper,
}

/// Episodes between the checkpoints of a run at the paper's scale: a run of 100,000 episodes
/// that stops (a crash, a machine taken back) continues from the last of them rather than from
/// the start; only the newest is kept.
pub(super) const PAPER_CHECKPOINT_EPISODES: u64 = 10_000;

impl Scale {
    pub(super) fn name(self) -> &'static str {
        match self {
            Scale::Quick => "quick",
            Scale::Paper => "paper",
        }
    }

    /// What the scale runs, in words, with the flags that override it.
    pub(super) fn describe(self, args: &Args) -> String {
        let what = match self {
            Scale::Quick => "`pgsrm train`'s defaults for each task",
            Scale::Paper => {
                "the paper's batch, new tokens and 100,000 episodes per run for each task"
            }
        };
        let given: Vec<&str> = [
            (args.model.is_some(), "--model"),
            (args.episodes.is_some(), "--episodes"),
            (args.batch_size.is_some(), "--batch-size"),
        ]
        .into_iter()
        .filter_map(|(g, f)| g.then_some(f))
        .collect();
        if given.is_empty() {
            format!("{} ({what})", self.name())
        } else {
            format!("{} ({what}; {} as given)", self.name(), given.join(", "))
        }
    }
}

/// The scale `--scale` names, else the device's: the paper's on a CUDA GPU, quick on the CPU
/// and on the emulated device. With the words that say which it was.
pub(super) fn choose_scale(flag: Option<Scale>, device: &Device) -> (Scale, &'static str) {
    match flag {
        Some(s) => (s, "set by --scale"),
        None if device.gpu().is_some_and(|g| g.emu().is_none()) => {
            (Scale::Paper, "the default on a CUDA GPU")
        }
        None => (Scale::Quick, "the default off a CUDA GPU"),
    }
}
