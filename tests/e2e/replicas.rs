//! Several engine replicas on one PostgreSQL behave as one: under a burst of concurrent
//! triggers spread across them, limits and shared locks hold (measured from the containers'
//! own output), every run ends, none starts twice — also when a replica is killed midway.
//!
//! `JOBDOCK_STRESS_TRIGGERS` sets the number of triggers (default 500).

use std::time::Duration;

use jobdock_testkit::TestApp;
use jobdock_types::RunStatus;

use crate::{builder, intervals, max_overlap, sh_job};

fn triggers() -> usize {
    std::env::var("JOBDOCK_STRESS_TRIGGERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

async fn three_replicas() -> Vec<TestApp> {
    let first = builder()
        .postgres(true)
        .arg("--lease-seconds")
        .arg("5")
        .start()
        .await;
    let second = builder()
        .replica_of(&first)
        .arg("--lease-seconds")
        .arg("5")
        .start()
        .await;
    let third = builder()
        .replica_of(&first)
        .arg("--lease-seconds")
        .arg("5")
        .start()
        .await;
    vec![first, second, third]
}

async fn setup(apps: &[TestApp]) {
    let c = apps[0].admin();
    for (name, max_parallel) in [("limited", 2), ("neighbour", 5)] {
        let mut s = sh_job(name, "echo start; sleep 0.2; echo end");
        s.max_parallel = Some(max_parallel);
        s.max_queued = Some(10_000);
        s.lock_keys = vec!["source-api".into()];
        c.create_job(&s).await.unwrap();
    }
    assert_eq!(
        c.set_lock_capacity("source-api", 2).await.unwrap().capacity,
        2
    );
}

/// Fires `n` triggers at once, alternating jobs, spread across the replicas.
async fn burst(apps: &[TestApp], n: usize) -> Vec<(String, String)> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let c = apps[i % apps.len()].admin();
            let job = if i % 2 == 0 { "limited" } else { "neighbour" };
            tokio::spawn(async move { (job, c.trigger(job, &Default::default(), None).await) })
        })
        .collect();
    let mut runs = Vec::new();
    for call in calls {
        let (job, result) = call.await.unwrap();
        runs.push((
            job.to_string(),
            result.expect("every trigger is accepted").0.id,
        ));
    }
    runs
}

async fn check(c: &jobdock_client::Client, runs: &[(String, String)]) {
    let mut all = Vec::new();
    for (_, id) in runs {
        let run = c
            .wait_until_final(id, Duration::from_secs(1200))
            .await
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert_eq!(run.attempts.len(), 1, "{run:?}");
        let starts = c
            .logs(id)
            .await
            .unwrap()
            .iter()
            .filter(|l| l.line == "start")
            .count();
        assert_eq!(starts, 1, "run {id} started {starts} times");
        all.push(id.clone());
    }
    let limited: Vec<String> = runs
        .iter()
        .filter(|(j, _)| j == "limited")
        .map(|(_, id)| id.clone())
        .collect();
    let every = intervals(c, &all).await;
    assert_eq!(every.len(), runs.len());
    assert!(
        max_overlap(&intervals(c, &limited).await) <= 2,
        "max_parallel 2 exceeded"
    );
    assert!(
        max_overlap(&every) <= 2,
        "the shared lock of capacity 2 was exceeded"
    );
    let lock = c.get_lock("source-api").await.unwrap();
    assert!(
        lock.holders.is_empty() && lock.waiters.is_empty(),
        "no lock leaks: {lock:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_limits_under_a_burst_of_triggers() {
    let apps = three_replicas().await;
    setup(&apps).await;
    let runs = burst(&apps, triggers()).await;
    check(&apps[1].admin(), &runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_others_take_over_when_a_replica_is_killed_midway() {
    let mut apps = three_replicas().await;
    setup(&apps).await;
    let runs = burst(&apps, triggers() / 2).await;
    // Midway: once some runs have ended, one replica dies with SIGKILL.
    let c = apps[0].admin();
    let until = std::time::Instant::now() + Duration::from_secs(600);
    while c
        .list_runs(None, Some(RunStatus::Succeeded), None)
        .await
        .unwrap()
        .items
        .len()
        < 10
    {
        assert!(std::time::Instant::now() < until, "runs never got going");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    apps[2].kill9();
    check(&c, &runs).await;
}

/// A replica without a backend never supervises a run, so what it is asked about one must
/// cross to the replica that does: a cancel asked for through it reaches the supervisor
/// (which looks for other replicas' cancels once a second, in one statement), and the run's
/// end wakes a long poll held on it (PostgreSQL's notice of the end).
#[tokio::test]
async fn a_cancel_and_an_end_cross_between_replicas() {
    let supervisor = builder().postgres(true).start().await;
    let front = builder()
        .replica_of(&supervisor)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .start()
        .await;
    supervisor
        .admin()
        .create_job(&sh_job("sleeper", "echo up; sleep 300"))
        .await
        .unwrap();
    let (run, _) = supervisor
        .admin()
        .trigger("sleeper", &Default::default(), None)
        .await
        .unwrap();
    let c = front.admin();
    crate::wait_for(&c, &run.id, 60, |r| r.status == RunStatus::Running).await;
    let poll = {
        let (c, id) = (c.clone(), run.id.clone());
        tokio::spawn(async move { c.wait_run(&id, 60).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.cancel_run(&run.id).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(50), poll)
        .await
        .expect("the long poll answered once the run ended, before its 60 s")
        .unwrap()
        .unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled, "{ended:?}");
}
