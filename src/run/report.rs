//! Comparing runs: curves read from run folders, summary figures, plots and `report.md`.
//!
//! Smoothness of a reward curve: the standard deviation of the update-to-update change of the
//! mean reward, `std(r[t+1] - r[t])` over the updates t of one run. Lower is smoother. Over
//! several seeds it is the mean of the per-seed figures.

use crate::files::write_atomic;
use crate::run::folder::{CONFIG, METRICS, read_jsonl};
use crate::run::plot::{Chart, Figure, Series, write_both, write_figure};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The name of the held-out evaluation a run folder may hold (written by `pgsrm eval --run`).
pub const EVAL: &str = "eval.json";

/// The per-update curves of one run.
#[derive(Clone, Debug, Default)]
pub struct RunCurves {
    pub name: String,
    pub path: PathBuf,
    pub config: Value,
    pub update: Vec<f64>,
    pub reward_mean: Vec<f64>,
    pub reward_min: Vec<f64>,
    pub reward_max: Vec<f64>,
    pub kl: Vec<f64>,
    pub entropy: Vec<f64>,
    /// `eval.json` of the run, when there is one.
    pub eval: Option<Value>,
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

impl RunCurves {
    /// Reads `config.json`, `metrics.jsonl` and, when present, `eval.json` of a run folder.
    pub fn load(path: &Path) -> Result<RunCurves> {
        if !path.is_dir() {
            bail!("{}: not a run folder", path.display());
        }
        let cp = path.join(CONFIG);
        let config: Value = match std::fs::read_to_string(&cp) {
            Ok(t) => serde_json::from_str(&t)
                .with_context(|| format!("{}: not valid JSON", cp.display()))?,
            Err(_) => Value::Null,
        };
        let lines = read_jsonl(&path.join(METRICS))?;
        let mut c = RunCurves {
            name: config
                .get("run_name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    path.file_name()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| path.display().to_string())
                }),
            path: path.to_path_buf(),
            config,
            ..Default::default()
        };
        for (i, m) in lines.iter().enumerate() {
            c.update.push(
                m.get("update")
                    .and_then(Value::as_f64)
                    .unwrap_or((i + 1) as f64),
            );
            c.reward_mean.push(num(m, "reward_mean"));
            c.reward_min.push(num(m, "reward_min"));
            c.reward_max.push(num(m, "reward_max"));
            c.kl.push(num(m, "kl"));
            c.entropy.push(num(m, "entropy"));
        }
        let ep = path.join(EVAL);
        if let Ok(t) = std::fs::read_to_string(&ep) {
            c.eval = Some(
                serde_json::from_str(&t)
                    .with_context(|| format!("{}: not valid JSON", ep.display()))?,
            );
        }
        Ok(c)
    }

    /// The reward shaping the run trained with, from its config.
    pub fn reward(&self) -> Option<&str> {
        self.config.get("reward").and_then(Value::as_str)
    }

    pub fn held_out_exact_match(&self) -> Option<f64> {
        self.eval.as_ref()?.get("exact_match")?.as_f64()
    }
}

fn finite(v: &[f64]) -> Vec<f64> {
    v.iter().copied().filter(|x| x.is_finite()).collect()
}

pub fn mean(v: &[f64]) -> Option<f64> {
    let v = finite(v);
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Population standard deviation of the finite values.
pub fn std(v: &[f64]) -> Option<f64> {
    let v = finite(v);
    let m = mean(&v)?;
    Some((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
}

/// The standard deviation of the update-to-update change of `rewards` (see the module docs);
/// `None` with fewer than two finite changes.
pub fn smoothness(rewards: &[f64]) -> Option<f64> {
    let d: Vec<f64> = rewards
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|x| x.is_finite())
        .collect();
    if d.len() < 2 {
        return None;
    }
    std(&d)
}

/// Mean of the first and of the last tenth (at least one update) of a curve.
pub fn start_end(v: &[f64]) -> (Option<f64>, Option<f64>) {
    if v.is_empty() {
        return (None, None);
    }
    let k = (v.len() / 10).max(1);
    (mean(&v[..k]), mean(&v[v.len() - k..]))
}

/// Runs drawn as one curve: mean over its runs per update, band min..max over its runs (or,
/// for a single run, over the batch's episodes where the curve is the reward).
pub struct Group<'a> {
    pub name: String,
    pub runs: Vec<&'a RunCurves>,
}

/// Which curve of a run to draw.
type Pick = fn(&RunCurves) -> &Vec<f64>;

fn over_runs(
    runs: &[&RunCurves],
    pick: impl Fn(&RunCurves) -> &Vec<f64>,
) -> Vec<(f64, f64, f64, f64)> {
    let n = runs.iter().map(|r| pick(r).len()).max().unwrap_or(0);
    let mut out = Vec::new();
    for t in 0..n {
        let vals: Vec<f64> = runs
            .iter()
            .filter_map(|r| pick(r).get(t).copied())
            .filter(|x| x.is_finite())
            .collect();
        let x = runs
            .iter()
            .find_map(|r| r.update.get(t).copied())
            .unwrap_or((t + 1) as f64);
        if vals.is_empty() {
            out.push((x, f64::NAN, f64::NAN, f64::NAN));
            continue;
        }
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.push((x, m, lo, hi));
    }
    out
}

fn series(
    g: &Group,
    pick: impl Fn(&RunCurves) -> &Vec<f64>,
    band_within_run: Option<(Pick, Pick)>,
) -> Series {
    let rows = over_runs(&g.runs, &pick);
    let points = rows.iter().map(|r| (r.0, r.1)).collect();
    let band = match (g.runs.len(), band_within_run) {
        (1, Some((lo, hi))) => {
            let r = g.runs[0];
            r.update
                .iter()
                .zip(lo(r).iter().zip(hi(r)))
                .map(|(&x, (&l, &h))| (x, l, h))
                .collect()
        }
        (1, None) => Vec::new(),
        _ => rows.iter().map(|r| (r.0, r.2, r.3)).collect(),
    };
    Series {
        name: g.name.clone(),
        points,
        band,
    }
}

/// The reward, KL and entropy charts of some groups of runs.
pub fn charts(groups: &[Group]) -> Vec<(&'static str, Chart)> {
    let band_note = if groups.iter().all(|g| g.runs.len() == 1) {
        "band: min..max over the batch"
    } else {
        "band: min..max over seeds"
    };
    let mk = |title: String, y: &str, pick: Pick, band: Option<(Pick, Pick)>| Chart {
        title,
        x_label: "update".into(),
        y_label: y.into(),
        series: groups.iter().map(|g| series(g, pick, band)).collect(),
    };
    vec![
        (
            "reward",
            mk(
                format!("Mean reward per update ({band_note})"),
                "mean reward",
                |r| &r.reward_mean,
                Some((|r| &r.reward_min, |r| &r.reward_max)),
            ),
        ),
        (
            "kl",
            mk(
                "KL to the reference per update".into(),
                "KL",
                |r| &r.kl,
                None,
            ),
        ),
        (
            "entropy",
            mk("Entropy per update".into(), "entropy", |r| &r.entropy, None),
        ),
    ]
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => "n/a".into(),
    }
}

/// The one value every update of every run of `g` logged as its mean reward, if there is one.
fn flat_reward(g: &Group) -> Option<f64> {
    let mut all = g.runs.iter().flat_map(|r| r.reward_mean.iter().copied());
    let first = all.next()?;
    all.all(|x| x == first).then_some(first)
}

/// The summary figures of one group, as JSON (also the rows of the report's table).
pub fn summary(g: &Group) -> Value {
    let per_run = |f: &dyn Fn(&RunCurves) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = g.runs.iter().filter_map(|r| f(r)).collect();
        mean(&v)
    };
    json!({
        "name": g.name,
        "runs": g.runs.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>(),
        "updates": g.runs.iter().map(|r| r.update.len()).max().unwrap_or(0),
        "reward_start": per_run(&|r| start_end(&r.reward_mean).0),
        "reward_end": per_run(&|r| start_end(&r.reward_mean).1),
        "smoothness": per_run(&|r| smoothness(&r.reward_mean)),
        "kl_mean": per_run(&|r| mean(&r.kl)),
        "entropy_start": per_run(&|r| start_end(&r.entropy).0),
        "entropy_end": per_run(&|r| start_end(&r.entropy).1),
        "held_out_exact_match": per_run(&|r| r.held_out_exact_match()),
        "held_out_reward": per_run(&|r| r.eval.as_ref()?.get("mean_reward")?.as_f64()),
    })
}

/// Writes the plots (`reward`, `kl`, `entropy`, each .svg and .png) and `report.md` comparing
/// `groups` into `out`; returns the summaries.
pub fn write_report(
    groups: &[Group],
    out: &Path,
    title: &str,
    preamble: &str,
) -> Result<Vec<Value>> {
    if groups.is_empty() {
        bail!("nothing to compare: no runs given");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (stem, chart) in charts(groups) {
        write_both(&chart, out, stem)?;
    }
    let sums: Vec<Value> = groups.iter().map(summary).collect();
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    if !preamble.is_empty() {
        let _ = writeln!(md, "{preamble}\n");
    }
    let _ = writeln!(
        md,
        "| runs | seeds | updates | mean reward, first tenth | mean reward, last tenth | smoothness | mean KL | entropy, first tenth | entropy, last tenth | held-out exact match | held-out mean PGSRM reward |"
    );
    let _ = writeln!(
        md,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (g, s) in groups.iter().zip(&sums) {
        let f = |k: &str| fmt(s[k].as_f64());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            g.name,
            g.runs.len(),
            s["updates"],
            f("reward_start"),
            f("reward_end"),
            f("smoothness"),
            f("kl_mean"),
            f("entropy_start"),
            f("entropy_end"),
            f("held_out_exact_match"),
            f("held_out_reward"),
        );
    }
    let _ = writeln!(
        md,
        "\nSmoothness: the standard deviation of the update-to-update change of the mean reward \
         (lower is smoother), averaged over the runs of a row. Held-out figures: greedy decoding \
         on the task's held-out prompts (`pgsrm eval`); exact match against the parent's answer \
         after strip + lower-case.\n"
    );
    for g in groups {
        if let Some(x) = flat_reward(g) {
            let _ = writeln!(
                md,
                "{}: the mean reward was {x} at every update of every run, so its smoothness of 0 \
                 says only that the curve is flat.\n",
                g.name
            );
        }
    }
    for (stem, what) in [
        ("reward", "Mean reward per update"),
        ("kl", "KL to the reference"),
        ("entropy", "Entropy"),
    ] {
        let _ = writeln!(
            md,
            "## {what}\n\n![{what}]({stem}.svg)\n\n([PNG]({stem}.png))\n"
        );
    }
    let _ = writeln!(md, "## Runs\n");
    for g in groups {
        for r in &g.runs {
            let _ = writeln!(md, "- {}: `{}`", g.name, r.path.display());
        }
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&sums)?.as_bytes(),
    )?;
    Ok(sums)
}

/// One task of a report over several tasks: its report's folder (relative to the overall one),
/// its child and why it is that one, its settings in words, its groups' summaries (`summary`)
/// and its reward chart.
pub struct TaskReport {
    pub task: String,
    pub folder: String,
    pub settings: String,
    pub child: String,
    pub child_reason: String,
    pub summaries: Vec<Value>,
    pub reward: Chart,
}

/// Writes `report.md` and `summary.json` over several tasks into `out`: one table of every
/// task's groups (mean reward in the first and last tenth, smoothness, held-out exact match and
/// mean PGSRM reward), each task's reward plot (from its own report), and one figure of all of
/// them (`overall.svg`, `overall.png`).
pub fn write_tasks_report(
    tasks: &[TaskReport],
    out: &Path,
    title: &str,
    preamble: &str,
) -> Result<()> {
    if tasks.is_empty() {
        bail!("nothing to report: no tasks");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let fig = Figure {
        title: "Mean reward per update, PGSRM and binary (band: min..max over seeds)".into(),
        charts: tasks.iter().map(|t| t.reward.clone()).collect(),
        columns: 3,
    };
    write_figure(&fig, out, "overall")?;
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    if !preamble.is_empty() {
        let _ = writeln!(md, "{preamble}\n");
    }
    let _ = writeln!(
        md,
        "| task | reward | runs | mean reward, first tenth | mean reward, last tenth | smoothness | held-out exact match | held-out mean PGSRM reward |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for t in tasks {
        for s in &t.summaries {
            let f = |k: &str| fmt(s[k].as_f64());
            let runs = s["runs"].as_array().map_or(0, Vec::len);
            let _ = writeln!(
                md,
                "| {} | {} | {runs} | {} | {} | {} | {} | {} |",
                t.task,
                s["name"].as_str().unwrap_or(""),
                f("reward_start"),
                f("reward_end"),
                f("smoothness"),
                f("held_out_exact_match"),
                f("held_out_reward"),
            );
        }
    }
    let _ = writeln!(
        md,
        "\nRewards of each row are its own (PGSRM's shaped cosine, or binary exact match); the \
         held-out columns score both with greedy decoding on the task's held-out prompts: exact \
         match against the parent's answer after strip + lower-case, and the PGSRM reward. \
         Smoothness: the standard deviation of the update-to-update change of the mean reward \
         (lower is smoother), averaged over the runs of a row.\n"
    );
    let _ = writeln!(
        md,
        "## All tasks\n\n![Mean reward per update, every task](overall.svg)\n\n([PNG](overall.png))\n"
    );
    let _ = writeln!(md, "## Each task\n");
    for t in tasks {
        let _ = writeln!(
            md,
            "### {}\n\n{}. Full report: [{}/report.md]({}/report.md) (KL and entropy too).\n\n\
             ![Mean reward per update on {}]({}/reward.svg)\n",
            t.task, t.settings, t.folder, t.folder, t.task, t.folder
        );
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    let all: Vec<Value> = tasks
        .iter()
        .map(|t| json!({"task": t.task, "folder": t.folder, "settings": t.settings, "groups": t.summaries}))
        .collect();
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&all)?.as_bytes(),
    )?;
    Ok(())
}
