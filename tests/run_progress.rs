//! A job's progress: the line names the run of how many, and the time left follows each task's
//! own pace, a task not started yet at the pace of all episodes so far, plus the evaluations left.

use pgsrm::run::progress::{JobProgress, PlannedRun, duration};

fn plan() -> Vec<PlannedRun> {
    let run = |task: &str, reward: &str, episodes| PlannedRun {
        task: task.into(),
        reward: reward.into(),
        seed: 1,
        episodes,
    };
    vec![
        run("colors", "pgsrm", 40),
        run("colors", "binary", 40),
        run("copy", "pgsrm", 20),
    ]
}

#[test]
fn time_left_follows_each_tasks_pace_and_the_evaluations() {
    let mut p = JobProgress::new(plan(), 1);
    p.start_run(0);
    assert_eq!(p.seconds_left(), None, "no pace before the first update");
    assert!(p.line(0, 1.0, 0.2, 0.0).contains("time left not known yet"));
    // 8 episodes in 4 s: half a second each, for every task so far.
    p.record_update(0, 8, 4.0, 8);
    let left = p.seconds_left().unwrap();
    assert!((left - (32.0 + 40.0 + 20.0) * 0.5).abs() < 1e-9, "{left}");
    let line = p.line(0, 2.0, 0.25, 0.001);
    assert!(
        line.starts_with("run 1 of 3 (colors pgsrm, seed 1) | episodes 8/40"),
        "{line}"
    );
    assert!(line.contains("about 46s left"), "{line}");
    // The first run done and evaluated in 10 s; the second starts from a checkpoint at 16.
    p.record_update(0, 32, 16.0, 40);
    p.record_eval(10.0);
    p.start_run(1);
    p.resume_run(1, 16);
    let left = p.seconds_left().unwrap();
    // 24 + 20 episodes at 0.5 s, and two evaluations left at 10 s each.
    assert!((left - (44.0 * 0.5 + 20.0)).abs() < 1e-9, "{left}");
    // The third run's task sets its own pace once it has one.
    p.record_update(1, 24, 12.0, 40);
    p.record_eval(10.0);
    p.start_run(2);
    p.record_update(2, 10, 20.0, 10);
    let left = p.seconds_left().unwrap();
    assert!((left - (10.0 * 2.0 + 10.0)).abs() < 1e-9, "{left}");
    assert!(
        p.line(2, 0.5, 0.1, 0.0)
            .starts_with("run 3 of 3 (copy pgsrm")
    );
}

#[test]
fn runs_trained_at_once_share_the_time_left() {
    let mut p = JobProgress::new(plan(), 2);
    p.start_run(0);
    p.start_run(1);
    // Each run's updates take a second per episode while the two share the machine.
    p.record_update(0, 8, 8.0, 8);
    p.record_update(1, 8, 8.0, 8);
    let left = p.seconds_left().unwrap();
    // 32 + 32 + 20 episodes at 1 s, over two runs at a time.
    assert!((left - (32.0 + 32.0 + 20.0) / 2.0).abs() < 1e-9, "{left}");
    let line = p.line(1, 1.0, 0.0, 0.0);
    assert!(
        line.starts_with("run 2 of 3 (colors binary, seed 1) | episodes 8/40"),
        "{line}"
    );
    // The last run left trains alone: its time is not shared.
    p.record_update(0, 32, 32.0, 40);
    p.record_update(1, 32, 32.0, 40);
    let left = p.seconds_left().unwrap();
    assert!((left - 20.0).abs() < 1e-9, "{left}");
}

#[test]
fn durations_read_as_hours_minutes_seconds() {
    assert_eq!(duration(0.4), "0s");
    assert_eq!(duration(59.0), "59s");
    assert_eq!(duration(61.0), "1m01s");
    assert_eq!(duration(3600.0 * 2.0 + 5.0 * 60.0), "2h05m");
}
