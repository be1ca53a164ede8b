//! A training run's folder, `runs/<name>/`:
//! - `config.json`: every setting of the run, written once when the run starts;
//! - `metrics.jsonl`: one JSON object per update, appended and flushed after each, so other tools
//!   can read the run while it goes on (a reader skips a last line that is not yet complete);
//! - `episodes.jsonl`: episodes (prompt, parent, child, reward), capped by `EPISODE_RULE`;
//! - `step-N/`: checkpoints, each written into a temporary sibling and renamed into place whole;
//! - `latest`: the name of the newest complete checkpoint, replaced atomically.
//!
//! A run never starts in a folder that already holds files unless it is resumed, and resuming
//! reads and checks everything before it changes anything.

use crate::files::{replace_dir, temp_sibling, write_atomic};
use crate::model::io::{SafetensorsFile, save_safetensors};
use crate::tensor::Tensor;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.jsonl";
pub const EPISODES: &str = "episodes.jsonl";
pub const LATEST: &str = "latest";
/// Tensors of the trainer state in a checkpoint (critic, optimiser moments, ...).
pub const STATE_TENSORS: &str = "trainer_state.safetensors";
/// The rest of the trainer state (kl_coef, RNG words, episode count, ...).
pub const STATE_JSON: &str = "trainer_state.json";

/// Updates whose every episode is logged; after them, only `EPISODES_PER_LATER_UPDATE` per update.
pub const FULL_EPISODE_UPDATES: u64 = 10;
pub const EPISODES_PER_LATER_UPDATE: usize = 4;
/// The rule, in words, for config.json and the docs.
pub const EPISODE_RULE: &str =
    "every episode of the first 10 updates, then the first 4 episodes of each later update";

/// An open run folder, ready to append to.
pub struct RunDir {
    pub path: PathBuf,
    metrics: File,
    episodes: File,
}

/// What `RunDir::resume` found.
pub struct Resumed {
    pub dir: RunDir,
    pub config: Value,
    /// The newest complete checkpoint: its step (update count) and folder.
    pub checkpoint: Option<(u64, PathBuf)>,
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))
}

fn dir_has_entries(path: &Path) -> Result<bool> {
    let mut it =
        std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(it.next().is_some())
}

impl RunDir {
    /// Starts a new run in `path` (created; it may exist only as an empty folder) and writes
    /// `config`. Refuses a folder with anything in it, so no run is overwritten.
    pub fn create(path: &Path, config: &Value) -> Result<RunDir> {
        if path.exists() {
            if !path.is_dir() {
                bail!("{} exists and is not a folder", path.display());
            }
            if dir_has_entries(path)? {
                bail!(
                    "{} already holds a run; give another --run-name, or --resume {} to continue it",
                    path.display(),
                    path.display()
                );
            }
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create the run folder {}", path.display()))?;
        write_atomic(
            &path.join(CONFIG),
            serde_json::to_string_pretty(config)?.as_bytes(),
        )?;
        Ok(RunDir {
            path: path.to_path_buf(),
            metrics: open_append(&path.join(METRICS))?,
            episodes: open_append(&path.join(EPISODES))?,
        })
    }

    /// Opens an existing run to continue it from its newest checkpoint. Reads and checks the
    /// config and both logs; changes nothing (see `truncate_after`).
    pub fn resume(path: &Path) -> Result<Resumed> {
        let config_path = path.join(CONFIG);
        let text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "--resume {}: no run there (cannot read {})",
                path.display(),
                config_path.display()
            )
        })?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
        if !config.is_object() {
            bail!("{}: expected a JSON object", config_path.display());
        }
        let checkpoint = latest_checkpoint(path)?;
        // Read both logs now so a corrupt line stops the resume before anything is changed.
        read_jsonl(&path.join(METRICS))?;
        read_jsonl(&path.join(EPISODES))?;
        Ok(Resumed {
            dir: RunDir {
                path: path.to_path_buf(),
                metrics: open_append(&path.join(METRICS))?,
                episodes: open_append(&path.join(EPISODES))?,
            },
            config,
            checkpoint,
        })
    }

    /// Drops the metrics and episodes logged after update `step` (those a resumed run writes
    /// again), so the folder reads as if the run had never stopped. Call it once the checkpoint
    /// has loaded. The lines kept are the bytes that were written: each line is parsed only to
    /// read its `update`, never written back from the parse (a float's text need not survive a
    /// parse and a print unchanged, and a user's metrics must not change on a resume).
    pub fn truncate_after(&mut self, step: u64) -> Result<()> {
        for name in [METRICS, EPISODES] {
            let p = self.path.join(name);
            let text = match std::fs::read_to_string(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
            };
            let kept = lines_up_to_update(&text, step)
                .with_context(|| format!("cannot resume from {}", p.display()))?;
            if kept.len() != text.len() {
                write_atomic(&p, kept.as_bytes())?;
            }
        }
        // The rename replaced the files; appends must go to the new ones.
        self.metrics = open_append(&self.path.join(METRICS))?;
        self.episodes = open_append(&self.path.join(EPISODES))?;
        Ok(())
    }

    /// Appends one update's metrics as one line and flushes it. `metrics` should carry `update`
    /// (1-based), which resuming uses to drop lines past the checkpoint.
    pub fn append_metrics(&mut self, metrics: &Value) -> Result<()> {
        append_line(&mut self.metrics, metrics)
            .with_context(|| format!("cannot append to {}", self.path.join(METRICS).display()))
    }

    /// Logs the episodes of update `update` (1-based) by `EPISODE_RULE`; each line gets `update`.
    pub fn append_episodes(&mut self, update: u64, episodes: &[Value]) -> Result<()> {
        let n = if update <= FULL_EPISODE_UPDATES {
            episodes.len()
        } else {
            EPISODES_PER_LATER_UPDATE.min(episodes.len())
        };
        for e in &episodes[..n] {
            let mut line = serde_json::Map::new();
            line.insert("update".into(), update.into());
            match e {
                Value::Object(m) => line.extend(m.clone()),
                other => {
                    line.insert("episode".into(), other.clone());
                }
            }
            append_line(&mut self.episodes, &Value::Object(line)).with_context(|| {
                format!("cannot append to {}", self.path.join(EPISODES).display())
            })?;
        }
        Ok(())
    }

    /// Writes checkpoint `step-<step>/`: `fill` writes the files into an empty temporary folder,
    /// which is renamed into place only when `fill` succeeded; then `latest` names it. A failure
    /// leaves the previous checkpoints and `latest` as they were.
    pub fn write_checkpoint(
        &self,
        step: u64,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let name = format!("step-{step}");
        let dst = self.path.join(&name);
        let tmp = temp_sibling(&dst, "partial");
        std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let result = fill(&tmp).and_then(|()| replace_dir(&tmp, &dst));
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e)
                .with_context(|| format!("cannot write the checkpoint {}", dst.display()));
        }
        write_atomic(&self.path.join(LATEST), format!("{name}\n").as_bytes())?;
        Ok(dst)
    }

    /// Deletes all but the newest `keep` checkpoints (0 keeps every one). A long run writes a
    /// child and its optimiser moments at every checkpoint, three copies of the weights, which
    /// would fill a disk; the newest is always kept, and it is the one `latest` names.
    pub fn prune_checkpoints(&self, keep: usize) -> Result<()> {
        if keep == 0 {
            return Ok(());
        }
        let mut steps = Vec::new();
        let entries = std::fs::read_dir(&self.path)
            .with_context(|| format!("cannot list {}", self.path.display()))?;
        for entry in entries {
            let name = entry?.file_name();
            if let Some(step) = name
                .to_str()
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        let latest = latest_checkpoint(&self.path)?.map(|(s, _)| s);
        for &step in steps.iter().rev().skip(keep) {
            if Some(step) == latest {
                continue;
            }
            let dir = self.path.join(format!("step-{step}"));
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot delete the old checkpoint {}", dir.display()))?;
        }
        Ok(())
    }
}

fn append_line(f: &mut File, v: &Value) -> Result<()> {
    // One write per line, so a reader never sees two half lines interleaved.
    let mut line = serde_json::to_string(v)?;
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.flush()?;
    Ok(())
}

/// The complete lines of a JSON Lines text whose `update` is at most `step` (a line without one
/// counts as update 0), byte for byte and in order. A last line without its newline is a write
/// that was cut short and is dropped; a complete line that does not parse is an error naming it.
fn lines_up_to_update(text: &str, step: u64) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Update {
        update: Option<u64>,
    }
    let mut kept = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let u: Update = serde_json::from_str(line)
            .with_context(|| format!("line {}: not a JSON object with a numeric update", i + 1))?;
        if u.update.unwrap_or(0) <= step {
            kept.push_str(line);
        }
    }
    Ok(kept)
}

/// Reads a JSON Lines file that may be being appended to: every complete line must parse (the
/// error names the line); a last line without its newline is a write in progress and is skipped.
/// A missing file reads as empty.
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i + 1],
        None => "",
    };
    let mut out = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
        out.push(v);
    }
    Ok(out)
}

/// The checkpoint `latest` names in run folder `run`, checked to exist; `None` when the run has
/// none yet.
pub fn latest_checkpoint(run: &Path) -> Result<Option<(u64, PathBuf)>> {
    let p = run.join(LATEST);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    let name = text.trim();
    let step = name
        .strip_prefix("step-")
        .and_then(|s| s.parse::<u64>().ok())
        .with_context(|| format!("{}: expected 'step-N', found {name:?}", p.display()))?;
    let dir = run.join(name);
    if !dir.is_dir() {
        bail!("{} names {name}, which is not there", p.display());
    }
    Ok(Some((step, dir)))
}

/// Saves trainer state into a checkpoint folder: tensors as safetensors, the rest as JSON.
pub fn save_state(dir: &Path, tensors: &[(String, &Tensor)], rest: &Value) -> Result<()> {
    save_safetensors(&dir.join(STATE_TENSORS), tensors)?;
    write_atomic(
        &dir.join(STATE_JSON),
        serde_json::to_string_pretty(rest)?.as_bytes(),
    )
}

/// Reads what `save_state` wrote.
pub fn load_state(dir: &Path) -> Result<(BTreeMap<String, Tensor>, Value)> {
    let mut st = SafetensorsFile::open(&dir.join(STATE_TENSORS))?;
    let names: Vec<String> = st.tensors.keys().cloned().collect();
    let mut tensors = BTreeMap::new();
    for n in names {
        let t = st.read(&n)?;
        tensors.insert(n, t);
    }
    let p = dir.join(STATE_JSON);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let rest =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", p.display()))?;
    Ok((tensors, rest))
}

/// The current git commit, when the binary runs inside a git checkout with git installed.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
