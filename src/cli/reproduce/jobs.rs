//! The runs of a reproduction: each run's folder, the `pgsrm train` flags that start or continue
//! it, and the check that a folder found holds a run of the same settings.

use super::*;

/// One run of the job: where it lives, the `pgsrm train` flags that start or continue it, and
/// the settings those flags give a new run.
pub(super) struct Job {
    pub(super) task: &'static str,
    pub(super) reward: &'static str,
    pub(super) seed: u64,
    pub(super) dir: PathBuf,
    pub(super) fresh: Vec<String>,
    /// The config.json a new run gets from `fresh` (`pgsrm::run::train::resolve`).
    pub(super) settings: Value,
}

impl Job {
    /// Whether the run has trained all its episodes: its newest checkpoint counts as many as
    /// its config asks for.
    pub(super) fn complete(&self) -> Result<bool> {
        let Some((_, ck)) = latest_checkpoint(&self.dir)? else {
            return Ok(false);
        };
        let read = |p: &Path| -> Result<Value> {
            serde_json::from_str(&std::fs::read_to_string(p)?)
                .with_context(|| format!("{}: not valid JSON", p.display()))
        };
        let cfg = read(&self.dir.join(CONFIG))?;
        let state = read(&ck.join(STATE_JSON))?;
        Ok(matches!(
            (state["episodes"].as_u64(), cfg["episodes"].as_u64()),
            (Some(done), Some(total)) if done >= total
        ))
    }

    /// The flags that continue this run when it has a config, else those that start it.
    pub(super) fn argv(&self, args: &Args, scale: Scale) -> Vec<String> {
        if self.dir.join(CONFIG).is_file() {
            // A reproduction run again continues (or just re-reads) the runs it already has.
            let mut argv: Vec<String> = vec![
                "train".into(),
                "--resume".into(),
                self.dir.display().to_string(),
                "--embedder".into(),
                args.embedder.clone(),
                "--device".into(),
                device_flag(args.device),
            ];
            if args.quiet {
                argv.push("--quiet".into());
            }
            if scale == Scale::Paper {
                // As when it started: only the newest of its checkpoints is kept.
                argv.extend(["--keep-checkpoints".into(), "1".into()]);
            }
            argv
        } else {
            self.fresh.clone()
        }
    }

    /// The config.json of the run already in this job's folder, if there is one.
    pub(super) fn existing(&self) -> Result<Option<Value>> {
        match std::fs::read_to_string(self.dir.join(CONFIG)) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}/{CONFIG}: not valid JSON", self.dir.display()))
                .map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The episodes this run trains: its config's when it has one, else what `pgsrm train`
    /// resolves its flags to.
    pub(super) fn episodes(&self, args: &Args) -> Result<u64> {
        let cfg = self.existing()?.unwrap_or_else(|| self.settings.clone());
        cfg["episodes"]
            .as_u64()
            .or(args.episodes)
            .with_context(|| format!("{}/{CONFIG}: no episodes", self.dir.display()))
    }

    /// Fails, naming the folder and each setting that differs, when the folder holds a run
    /// whose settings are not those this job would start it with: a job continues or reads the
    /// runs it finds, and must not mix another job's runs (of another scale, child or length)
    /// into its report.
    pub(super) fn check_existing(&self, scale: Scale) -> Result<()> {
        let Some(there) = self.existing()? else {
            return Ok(());
        };
        let diffs = differences(&there, &self.settings);
        if !diffs.is_empty() {
            bail!(
                "{}: holds a run with other settings than this job's (--scale {}): {}. Give \
                 another --out, the flags that run had, or remove the folder to train it again",
                self.dir.display(),
                scale.name(),
                diffs.join("; ")
            );
        }
        Ok(())
    }

    /// How far the run in this folder is, for the plan.
    pub(super) fn state(&self) -> Result<String> {
        if self.existing()?.is_none() {
            return Ok("new".into());
        }
        let Some((step, ck)) = latest_checkpoint(&self.dir)? else {
            return Ok("stopped before its first checkpoint: starts again".into());
        };
        if self.complete()? {
            return Ok("finished: read, not trained".into());
        }
        let done: Value = serde_json::from_str(&std::fs::read_to_string(ck.join(STATE_JSON))?)
            .with_context(|| format!("{}/{STATE_JSON}: not valid JSON", ck.display()))?;
        Ok(format!(
            "continues from step-{step} ({} episodes done)",
            done["episodes"]
        ))
    }
}

/// The settings of a run that shape its figures: `there` (a run folder's config.json) against
/// `here` (a new run's), as "name X there, Y here" for each that differs.
pub(super) fn differences(there: &Value, here: &Value) -> Vec<String> {
    pub(super) fn show(v: &Value) -> String {
        match v {
            // The learning rates and coefficients are f32s in the config.
            Value::Number(n) if n.is_f64() => {
                format!("{:e}", n.as_f64().unwrap_or(f64::NAN) as f32)
            }
            Value::Null => "none".into(),
            v => v.to_string(),
        }
    }
    let mut diffs = Vec::new();
    let mut compare = |name: &str, a: &Value, b: &Value| {
        if a != b {
            diffs.push(format!("{name} {} there, {} here", show(a), show(b)));
        }
    };
    for key in ["task", "reward", "seed", "model", "episodes", "embedder"] {
        compare(key, &there[key], &here[key]);
    }
    // Both through `PpoConfig`, so that a setting an older config leaves out reads as its default.
    let ppo = |cfg: &Value| -> std::result::Result<Value, String> {
        serde_json::from_value::<PpoConfig>(cfg["ppo"].clone())
            .and_then(serde_json::to_value)
            .map_err(|e| e.to_string())
    };
    match (ppo(there), ppo(here)) {
        (Ok(a), Ok(b)) => {
            if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
                for (key, b) in b {
                    compare(key, a.get(key).unwrap_or(&Value::Null), b);
                }
            }
        }
        (Err(e), _) => diffs.push(format!("its PPO settings cannot be read ({e})")),
        (_, Err(e)) => diffs.push(format!("this job's PPO settings: {e}")),
    }
    diffs
}

pub(super) fn parse_train(argv: &[String]) -> Result<train::Args> {
    Ok(TrainFlags::try_parse_from(argv)
        .with_context(|| format!("train flags {argv:?}"))?
        .args)
}

/// The flags of a fresh run of `task` under `reward` with `seed`, into `runs_dir`, at `scale`.
pub(super) fn fresh_argv(
    args: &Args,
    scale: Scale,
    task: &str,
    reward: &str,
    seed: u64,
    runs_dir: &Path,
) -> Result<Vec<String>> {
    let mut argv: Vec<String> = vec!["train".into()];
    let mut flag = |k: &str, v: String| {
        argv.push(format!("--{k}"));
        argv.push(v);
    };
    flag("task", task.into());
    flag("reward", reward.into());
    flag("seed", seed.to_string());
    flag("runs-dir", runs_dir.display().to_string());
    flag("run-name", format!("{task}-{reward}-seed{seed}"));
    flag("embedder", args.embedder.clone());
    flag("device", device_flag(args.device));
    let (episodes, batch_size) = match scale {
        Scale::Quick => {
            // Runs of a quick reproduction are short: one checkpoint at the end, which
            // evaluation reads, rather than one every ten updates.
            flag("checkpoint-every", "0".into());
            (args.episodes, args.batch_size)
        }
        Scale::Paper => {
            // The paper's settings for the task: its batch and new tokens (`pgsrm tasks`), and
            // its run length. The child is `pgsrm train`'s choice (the task's GPT-2 when found,
            // else SmolLM2). A run that long keeps a checkpoint every 10,000 episodes, the newest
            // only, so that one that stops continues.
            let settings = pgsrm::tasks::by_name(task)?.settings;
            let batch = args.batch_size.unwrap_or(settings.batch_size);
            let every = PAPER_CHECKPOINT_EPISODES.div_ceil(batch.max(1) as u64);
            flag("max-new-tokens", settings.max_new_tokens.to_string());
            flag("checkpoint-every", every.to_string());
            flag("keep-checkpoints", "1".into());
            (Some(args.episodes.unwrap_or(PAPER_EPISODES)), Some(batch))
        }
    };
    if let Some(m) = &args.model {
        flag("model", m.clone());
    }
    if let Some(e) = episodes {
        flag("episodes", e.to_string());
    }
    if let Some(b) = batch_size {
        flag("batch-size", b.to_string());
    }
    // The last checkpoint without the optimiser moments, which only a run that goes on needs:
    // a third of the size (0.5 GB instead of 1.6 for SmolLM2, 30 runs of them for all five
    // tasks).
    argv.push("--lean-last-checkpoint".into());
    if args.quiet {
        argv.push("--quiet".into());
    }
    Ok(argv)
}

/// `choice` as its `--device` value.
pub(super) fn device_flag(choice: DeviceChoice) -> String {
    choice
        .to_possible_value()
        .map_or_else(|| "auto".into(), |v| v.get_name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        args: Args,
    }

    pub(super) fn args(flags: &[&str]) -> Args {
        let argv = [
            &["reproduce", "--task", "colors", "--device", "cpu"][..],
            flags,
        ]
        .concat();
        Flags::try_parse_from(argv).unwrap().args
    }

    pub(super) fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The quick scale gives `pgsrm train` the flags a reproduction always gave it.
    #[test]
    pub(super) fn quick_scale_passes_train_the_flags_it_always_did() {
        let dir = Path::new("runs/x");
        let argv = fresh_argv(&args(&[]), Scale::Quick, "colors", "pgsrm", 2, dir).unwrap();
        let base = [
            "train",
            "--task",
            "colors",
            "--reward",
            "pgsrm",
            "--seed",
            "2",
            "--runs-dir",
            "runs/x",
            "--run-name",
            "colors-pgsrm-seed2",
            "--embedder",
            "minilm",
            "--device",
            "cpu",
            "--checkpoint-every",
            "0",
        ];
        assert_eq!(
            argv,
            strings(&[&base[..], &["--lean-last-checkpoint"]].concat())
        );
        let flags = [
            "--model",
            "m",
            "--episodes",
            "5",
            "--batch-size",
            "3",
            "--quiet",
        ];
        let argv = fresh_argv(&args(&flags), Scale::Quick, "colors", "pgsrm", 2, dir).unwrap();
        let more = [
            "--model",
            "m",
            "--episodes",
            "5",
            "--batch-size",
            "3",
            "--lean-last-checkpoint",
            "--quiet",
        ];
        assert_eq!(argv, strings(&[&base[..], &more[..]].concat()));
    }

    /// The paper's scale: the task's batch and new tokens, 100,000 episodes, a checkpoint every
    /// 10,000 episodes; flags override the batch and the episodes.
    #[test]
    pub(super) fn paper_scale_passes_the_tasks_settings() {
        let dir = Path::new("runs/x");
        let has = |argv: &[String], flag: &str, value: &str| {
            argv.windows(2).any(|w| w[0] == flag && w[1] == value)
        };
        for (task, batch, tokens, every) in
            [("colors", "50", "2", "200"), ("copy", "10", "10", "1000")]
        {
            let argv = fresh_argv(&args(&[]), Scale::Paper, task, "binary", 1, dir).unwrap();
            assert!(has(&argv, "--batch-size", batch), "{argv:?}");
            assert!(has(&argv, "--max-new-tokens", tokens), "{argv:?}");
            assert!(has(&argv, "--episodes", "100000"), "{argv:?}");
            assert!(has(&argv, "--checkpoint-every", every), "{argv:?}");
            assert!(has(&argv, "--keep-checkpoints", "1"), "{argv:?}");
            assert!(!argv.contains(&"--model".to_string()), "{argv:?}");
        }
        let flags = ["--episodes", "300", "--batch-size", "3"];
        let argv = fresh_argv(&args(&flags), Scale::Paper, "copy", "binary", 1, dir).unwrap();
        assert!(has(&argv, "--batch-size", "3"), "{argv:?}");
        assert!(has(&argv, "--episodes", "300"), "{argv:?}");
        assert!(has(&argv, "--checkpoint-every", "3334"), "{argv:?}");
    }
}
