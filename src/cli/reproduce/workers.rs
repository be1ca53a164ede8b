//! Training a reproduction's runs, several at once on the CPU: the workers, the threads each gets,
//! and what they share.

use super::*;

/// Memory a run may take, for the default number of runs at once: a SmolLM2 run of the fallback
/// peaks at 6.3 GB resident (policy, reference and its transposed copy, gradients, moments,
/// activations, the checkpoint's copy of the state), with room to spare.
pub(super) const MEMORY_PER_RUN: u64 = 8 << 30;

/// Runs trained at once unless `--jobs` says: on the CPU one per thread of the pool, at most one
/// per `MEMORY_PER_RUN` of the memory available; one on a GPU.
pub(super) fn default_parallel(device: &Device) -> usize {
    if device.gpu().is_some() {
        return 1;
    }
    let threads = rayon::current_num_threads();
    let by_memory = available_memory().map_or(threads, |b| (b / MEMORY_PER_RUN) as usize);
    threads.min(by_memory).max(1)
}

/// Bytes of memory available to new work (`MemAvailable` of /proc/meminfo), where known.
pub(super) fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the runs of a job share while several train at once.
pub(super) struct Shared<'a> {
    pub(super) args: &'a Args,
    pub(super) scale: Scale,
    /// The scale in words, and how it was chosen, for the reports.
    pub(super) scale_words: &'a str,
    /// Where every run trains and is evaluated: the device the command opened.
    pub(super) device: &'a Device,
    pub(super) jobs: &'a [Job],
    pub(super) single: bool,
    pub(super) out: &'a Path,
    pub(super) task_dir: &'a (dyn Fn(&str) -> PathBuf + Sync),
    pub(super) t0: Instant,
    pub(super) progress: Mutex<JobProgress>,
    /// The next job no run has taken yet.
    pub(super) next: AtomicUsize,
    /// Set when a run fails: the others finish their run and take no other.
    pub(super) failed: AtomicBool,
    pub(super) done: Mutex<Done>,
}

/// The runs evaluated so far, and the reports of the tasks they complete.
pub(super) struct Done {
    pub(super) evaluated: Vec<bool>,
    pub(super) reports: Vec<TaskReport>,
    pub(super) finished_before: usize,
}

impl Shared<'_> {
    /// Takes jobs until none is left, each trained and evaluated on a pool of `threads`
    /// threads. A run's figures do not depend on its threads (the products split their work
    /// the same way on any number), so neither do they on how many runs train at once.
    pub(super) fn worker(&self, threads: usize) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("cannot start the threads of a run")?;
        pool.install(|| {
            let args = self.args;
            let embedder = pgsrm::reward::embedder::by_name(
                &args.embedder,
                &EmbedderOptions {
                    encoders: Some(self.device.encoders()),
                    ..Default::default()
                },
            )?;
            while !self.failed.load(Ordering::SeqCst) {
                let k = self.next.fetch_add(1, Ordering::SeqCst);
                if k >= self.jobs.len() {
                    break;
                }
                if let Err(e) = self.run_job(k, embedder.as_ref()) {
                    self.failed.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
            Ok(())
        })
    }

    /// Trains job `k` (or reads it, when it is finished already), evaluates it, and writes its
    /// task's report when it is the last of that task's runs to be evaluated.
    pub(super) fn run_job(&self, k: usize, embedder: &dyn Embedder) -> Result<()> {
        let (args, job, n) = (self.args, &self.jobs[k], self.jobs.len());
        if !args.quiet {
            eprintln!(
                "\nreproduce: run {} of {n} ({} task, {} reward, seed {})",
                k + 1,
                job.task,
                job.reward,
                job.seed
            );
        }
        if job.dir.join(CONFIG).is_file() && latest_checkpoint(&job.dir)?.is_none() {
            // Stopped before its one checkpoint: nothing in it can be continued.
            eprintln!(
                "{}: stopped before its checkpoint; starting it again",
                job.dir.display()
            );
            std::fs::remove_dir_all(&job.dir)
                .with_context(|| format!("cannot clear {}", job.dir.display()))?;
        }
        lock(&self.progress).start_run(k);
        let path = if job.complete()? {
            lock(&self.done).finished_before += 1;
            // Trained already: its last checkpoint is only read, for evaluation.
            let mut p = lock(&self.progress);
            let episodes = p.runs()[k].episodes;
            p.resume_run(k, episodes);
            job.dir.clone()
        } else {
            train::train_with(
                &parse_train(&job.argv(args, self.scale))?,
                self.device,
                Some((&self.progress, k)),
            )?
        };
        let te = Instant::now();
        evaluate_run(&path, job.task, embedder, self.device, args.quiet)?;
        lock(&self.progress).record_eval(te.elapsed().as_secs_f64());
        let task_done = {
            let mut done = lock(&self.done);
            done.evaluated[k] = true;
            self.jobs
                .iter()
                .zip(&done.evaluated)
                .all(|(j, &e)| e || j.task != job.task)
        };
        if task_done {
            // One task's report says the whole job's wall time; several tasks' reports leave
            // it to the report over them.
            let wall = self.single.then(|| self.t0.elapsed().as_secs_f64());
            let dir = (self.task_dir)(job.task);
            let report = task_report(job.task, self.jobs, &dir, self.out, wall, self.scale_words)?;
            lock(&self.done).reports.push(report);
        }
        Ok(())
    }
}
