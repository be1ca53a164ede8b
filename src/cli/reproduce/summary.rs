//! What a reproduction reports: each run's evaluation, the settings and child of each task, the
//! per-task report, and the plan `--plan` prints.

use super::*;

/// Evaluates a run's newest checkpoint on its task's held-out prompts into its `eval.json`,
/// unless that file already holds this checkpoint's evaluation.
pub(super) fn evaluate_run(
    path: &Path,
    task: &str,
    embedder: &dyn Embedder,
    device: &Device,
    quiet: bool,
) -> Result<()> {
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(path.join(CONFIG))?)
        .with_context(|| format!("{}/{CONFIG}: not valid JSON", path.display()))?;
    let (step, ck) = latest_checkpoint(path)?
        .with_context(|| format!("{}: no checkpoint to evaluate", path.display()))?;
    let checkpoint = format!("step-{step}");
    let eval_path = path.join(EVAL);
    if let Ok(text) = std::fs::read_to_string(&eval_path)
        && let Ok(old) = serde_json::from_str::<Value>(&text)
        && old["checkpoint"] == checkpoint.as_str()
    {
        return Ok(());
    }
    let loaded = load_model(&ck.display().to_string())?;
    let task = pgsrm::tasks::by_name(task)?;
    let max_new = cfg["max_new_tokens"]
        .as_u64()
        .map(|n| n as usize)
        .unwrap_or(task.settings.max_new_tokens);
    let chat = cfg["chat"].as_bool().unwrap_or(false);
    let mut r = evaluate(&loaded, &task, chat, max_new, Some(embedder), 5, device)?;
    r["checkpoint"] = checkpoint.into();
    write_atomic(&eval_path, serde_json::to_string_pretty(&r)?.as_bytes())?;
    if !quiet {
        eprintln!(
            "held-out {}: exact match {:.3}, mean PGSRM reward {:.4}",
            path.display(),
            r["exact_match"].as_f64().unwrap_or(f64::NAN),
            r["mean_reward"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// Seconds, and from a minute on the same in minutes.
pub(super) fn wall_time(seconds: f64) -> String {
    if seconds >= 60.0 {
        format!("{seconds:.0} s ({})", duration(seconds))
    } else {
        format!("{seconds:.0} s")
    }
}

/// A markdown table of each task's child, why it is that one, and its settings.
pub(super) fn settings_table(reports: &[TaskReport]) -> String {
    let mut t =
        String::from("| task | child | why this child | settings |\n| --- | --- | --- | --- |\n");
    for r in reports {
        t.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.task, r.child, r.child_reason, r.settings
        ));
    }
    t
}

/// Why a run's child is the one it is, in a few words: its config's `child_reason` (older
/// configs have only the long `child_choice`).
pub(super) fn child_reason(cfg: &Value) -> String {
    cfg["child_reason"]
        .as_str()
        .or_else(|| cfg["child_choice"].as_str())
        .unwrap_or("not recorded")
        .to_string()
}

/// The one-line description of a task's runs for a report: its settings.
pub(super) fn settings_line(cfg: &Value) -> String {
    let ppo = &cfg["ppo"];
    // The learning rate is an f32 in the config: shown as one, not as the f64 that holds it.
    let lr = ppo["actor_lr"]
        .as_f64()
        .map_or_else(|| "?".into(), |x| format!("{:e}", x as f32));
    let entropy = ppo["entropy_coef"]
        .as_f64()
        .map_or_else(|| "?".into(), |x| format!("{}", x as f32));
    format!(
        "{} episodes per run, batch {}, {} new tokens, actor lr {lr}, {}, {} baseline, entropy \
         bonus {entropy}",
        cfg["episodes"],
        ppo["batch_size"],
        ppo["max_new_tokens"],
        if ppo["chat"].as_bool() == Some(true) {
            "chat prompts"
        } else {
            "raw prompts"
        },
        ppo["baseline"].as_str().unwrap_or("?"),
    )
}

/// `--plan`: the job's runs and their settings on stdout; nothing is trained or written.
pub(super) fn print_plan(
    args: &Args,
    jobs: &[Job],
    scale_words: &str,
    device: &Device,
    out: &Path,
) -> Result<()> {
    let episodes = jobs.iter().map(|j| j.episodes(args)).sum::<Result<u64>>()?;
    println!(
        "reproduce: scale {scale_words}; on {}; seeds {:?}, each under both rewards: {} runs, \
         {episodes} episodes in all, into {}",
        device.name(),
        args.seeds,
        jobs.len(),
        out.display()
    );
    let mut tasks: Vec<&str> = jobs.iter().map(|j| j.task).collect();
    tasks.dedup();
    for task in tasks {
        let runs: Vec<&Job> = jobs.iter().filter(|j| j.task == task).collect();
        let cfg = &runs[0].settings;
        println!(
            "\n{task}: child {} ({})",
            cfg["model"].as_str().unwrap_or("?"),
            child_reason(cfg)
        );
        let updates = cfg["episodes"]
            .as_u64()
            .zip(cfg["ppo"]["batch_size"].as_u64())
            .map_or(0, |(e, b)| e.div_ceil(b.max(1)));
        let every = match cfg["checkpoint_every"].as_u64() {
            Some(n) if n > 0 && n < updates => {
                format!("{updates} updates, a checkpoint every {n}, the newest kept")
            }
            _ => format!("{updates} updates, one checkpoint at the end"),
        };
        println!("  {}; {every}", settings_line(cfg));
        for job in runs {
            let differs = job
                .existing()?
                .map(|there| differences(&there, &job.settings))
                .unwrap_or_default();
            let state = if differs.is_empty() {
                job.state()?
            } else {
                format!(
                    "holds a run with other settings ({}): the job stops there",
                    differs.join("; ")
                )
            };
            println!("  {}: {state}", job.dir.display());
        }
    }
    Ok(())
}

/// Writes the report of `task`'s runs into `dir` and returns what the report over tasks needs.
pub(super) fn task_report(
    task: &str,
    jobs: &[Job],
    dir: &Path,
    out: &Path,
    wall: Option<f64>,
    scale_words: &str,
) -> Result<TaskReport> {
    let curves: Vec<RunCurves> = jobs
        .iter()
        .filter(|j| j.task == task)
        .map(|j| RunCurves::load(&j.dir))
        .collect::<Result<_>>()?;
    let groups: Vec<Group> = REWARDS
        .iter()
        .map(|r| Group {
            name: r.to_string(),
            runs: curves.iter().filter(|c| c.reward() == Some(*r)).collect(),
        })
        .collect();
    let cfg = &curves[0].config;
    let child = cfg["model"].as_str().unwrap_or("").to_string();
    let reason = child_reason(cfg);
    let seeds: Vec<u64> = curves
        .iter()
        .filter(|c| c.reward() == Some(REWARDS[0]))
        .filter_map(|c| c.config["seed"].as_u64())
        .collect();
    let settings = settings_line(cfg);
    let about = format!(
        "Task `{task}`, seeds {seeds:?}, scale {scale_words}: {settings}. Child: {child} \
         ({reason})."
    );
    let preamble = match wall {
        Some(wall) => format!(
            "{about}\n\nWall time of the whole reproduction (training, evaluation, report): {}.",
            wall_time(wall)
        ),
        None => about,
    };
    let summaries = write_report(
        &groups,
        dir,
        &format!("PGSRM vs binary on {task}"),
        &preamble,
    )?;
    let mut reward = charts(&groups).swap_remove(0).1;
    reward.title = task.to_string();
    let folder = dir
        .strip_prefix(out)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dir.display().to_string());
    Ok(TaskReport {
        task: task.to_string(),
        folder,
        settings,
        child,
        child_reason: reason,
        summaries,
        reward,
    })
}
