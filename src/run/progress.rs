//! Progress of a job of several training runs (`pgsrm reproduce`): which run of how many, how
//! fast it goes, and about how long the whole job has left.
//!
//! The time left is estimated from the job's own pace: seconds per episode of each task as its
//! updates so far took them (a task not started yet at the pace of every episode so far), times
//! the episodes left, plus the held-out evaluations left at their mean time so far; with several
//! runs trained at once, that work is shared among them.

use std::collections::HashMap;
use std::time::Instant;

/// One run of the job.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRun {
    pub task: String,
    pub reward: String,
    pub seed: u64,
    pub episodes: u64,
}

/// A job's plan and what it has done so far.
pub struct JobProgress {
    runs: Vec<PlannedRun>,
    started: Instant,
    /// Episodes each run has done so far, in this job or before it.
    done: Vec<u64>,
    /// Runs trained at once: the job's work left is shared among them.
    parallel: usize,
    /// Per task: episodes trained in this job and the seconds their updates took.
    pace: HashMap<String, (u64, f64)>,
    /// Evaluations done and their seconds.
    evals: (usize, f64),
}

/// `h`h`mm`m, `m`m`ss`s or `s`s.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

impl JobProgress {
    /// The progress of `runs`, `parallel` of them trained at once.
    pub fn new(runs: Vec<PlannedRun>, parallel: usize) -> Self {
        JobProgress {
            done: vec![0; runs.len()],
            runs,
            started: Instant::now(),
            parallel: parallel.max(1),
            pace: HashMap::new(),
            evals: (0, 0.0),
        }
    }

    pub fn runs(&self) -> &[PlannedRun] {
        &self.runs
    }

    /// Run `k` (from 0) starts from nothing.
    pub fn start_run(&mut self, k: usize) {
        self.resume_run(k, 0);
    }

    /// Run `k` continues from a checkpoint with `done` of its episodes done.
    pub fn resume_run(&mut self, k: usize, done: u64) {
        if let Some(d) = self.done.get_mut(k) {
            *d = done;
        }
    }

    /// An update of run `k` took `seconds` for `episodes` episodes; the run has `done`
    /// episodes now.
    pub fn record_update(&mut self, k: usize, episodes: u64, seconds: f64, done: u64) {
        if let Some(run) = self.runs.get(k) {
            let p = self.pace.entry(run.task.clone()).or_insert((0, 0.0));
            p.0 += episodes;
            p.1 += seconds;
            self.done[k] = done;
        }
    }

    /// An evaluation took `seconds`.
    pub fn record_eval(&mut self, seconds: f64) {
        self.evals.0 += 1;
        self.evals.1 += seconds;
    }

    /// Seconds per episode of `task` at the pace so far (of every task when `task` has none yet).
    fn seconds_per_episode(&self, task: &str) -> Option<f64> {
        if let Some(&(n, s)) = self.pace.get(task)
            && n > 0
        {
            return Some(s / n as f64);
        }
        let (n, s) = self
            .pace
            .values()
            .fold((0u64, 0.0f64), |a, b| (a.0 + b.0, a.1 + b.1));
        (n > 0).then(|| s / n as f64)
    }

    /// Seconds the job has left: every run's episodes left at its task's pace, and one
    /// evaluation per run not yet evaluated at the mean evaluation time (none counted before the
    /// first), all shared among the runs trained at once (as many as there are runs left to
    /// train). `None` before any update.
    pub fn seconds_left(&self) -> Option<f64> {
        let evals_left = self.runs.len().saturating_sub(self.evals.0);
        let mut left = 0.0;
        let mut unfinished = 0;
        for (run, &done) in self.runs.iter().zip(&self.done) {
            let todo = run.episodes.saturating_sub(done);
            if todo > 0 {
                left += todo as f64 * self.seconds_per_episode(&run.task)?;
                unfinished += 1;
            }
        }
        if self.evals.0 > 0 {
            left += evals_left as f64 * self.evals.1 / self.evals.0 as f64;
        }
        Some(left / self.parallel.min(unfinished).max(1) as f64)
    }

    /// The progress line of run `k` after an update: which run, its episodes,
    /// `episodes_per_s`, its reward and KL, the job's time so far and left.
    pub fn line(&self, k: usize, episodes_per_s: f32, reward: f32, kl: f32) -> String {
        let n = self.runs.len();
        let Some(run) = self.runs.get(k) else {
            return String::new();
        };
        let left = match self.seconds_left() {
            Some(s) => format!("about {} left", duration(s)),
            None => "time left not known yet".into(),
        };
        format!(
            "run {} of {n} ({} {}, seed {}) | episodes {}/{} | {episodes_per_s:.2} episodes/s | reward {reward:.4} | KL {kl:.5} | {} so far, {left}",
            k + 1,
            run.task,
            run.reward,
            run.seed,
            self.done[k],
            run.episodes,
            duration(self.started.elapsed().as_secs_f64()),
        )
    }
}
