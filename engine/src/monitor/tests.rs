//! The periodic check against a real store: what it reads again, and when.

use jobdock_types::{AnomalyKind, JobSpec, RunStatus};

use super::ActiveCheck;
use crate::store::anomalies::ActiveRun;
use crate::store::runs::{self, NewRun, Outcome};
use crate::store::{jobs, now_ms, JobRow, NewJob, Store};

// Far longer than the hour the long run is in: only `long_running` may be raised.
const STALL: std::time::Duration = std::time::Duration::from_secs(86_400);

/// A store in a temporary directory (kept while the first value lives) with job `name`.
async fn store_with_job(name: &str) -> (tempfile::TempDir, Store, JobSpec, JobRow) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_sqlite(&dir.path().join("store.db"))
        .await
        .unwrap();
    let spec = JobSpec {
        name: name.into(),
        image: "img".into(),
        ..Default::default()
    };
    let mut tx = s.begin_write().await.unwrap();
    let job = jobs::insert(&mut tx, NewJob { spec: &spec }).await.unwrap();
    tx.commit().await.unwrap();
    (dir, s, spec, job)
}

/// A run of `job` that started `ago_ms` ago and still runs.
async fn running(s: &Store, job: &JobRow, spec: &JobSpec, ago_ms: i64) -> String {
    let mut tx = s.begin_write().await.unwrap();
    let id = runs::insert(&mut tx, NewRun::queued(job, spec))
        .await
        .unwrap()
        .id;
    assert!(runs::mark_starting(&mut tx, &id, "test", now_ms() + 60_000)
        .await
        .unwrap());
    assert!(runs::mark_running(&mut tx, &id, 1, now_ms() - ago_ms)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    id
}

/// Runs `ids` as the supervisors of a replica would tell the check of them.
async fn going(s: &Store, ids: &[&str]) -> Vec<ActiveRun> {
    let mut going = Vec::new();
    for id in ids {
        let r = s.run(id).await.unwrap();
        going.push(ActiveRun {
            id: r.id,
            seq: r.seq,
            attempt: r.attempt,
            job_id: r.job_id,
            job: r.job_name,
            status: r.status,
            created_at: r.created_at,
            started_at: r.started_at,
            last_output_at: None,
        });
    }
    going
}

/// Ends run `id` as a success of one second.
async fn succeed(s: &Store, id: &str) {
    let mut tx = s.begin_write().await.unwrap();
    let o = Outcome {
        exit_code: Some(0),
        started_at: Some(now_ms() - 1_000),
        finished_at: Some(now_ms()),
        ..Default::default()
    };
    let done = runs::finish(&mut tx, id, 1, RunStatus::Succeeded, &o, true)
        .await
        .unwrap();
    assert!(done.is_some());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_jobs_baseline_is_read_again_once_one_of_its_runs_has_ended() {
    let (_dir, s, spec, job) = store_with_job("nightly").await;
    // An hour in, and one just begun; the job has no successes yet, so nothing is usual.
    let long = running(&s, &job, &spec, 3_600_000).await;
    let other = running(&s, &job, &spec, 0).await;
    let mut check = ActiveCheck::default();
    let both = going(&s, &[&long, &other]).await;
    assert!(check
        .pass(&s, both.clone(), STALL)
        .await
        .unwrap()
        .is_empty());

    // Five one-second successes that began and ended between two passes: the check has not
    // seen any of the job's runs end, and keeps the baseline it read.
    for _ in 0..5 {
        let id = running(&s, &job, &spec, 1_000).await;
        succeed(&s, &id).await;
    }
    assert!(check.pass(&s, both, STALL).await.unwrap().is_empty());

    // One it saw running ends: the baseline is read again, and an hour is far from usual.
    succeed(&s, &other).await;
    let raised = check
        .pass(&s, going(&s, &[&long]).await, STALL)
        .await
        .unwrap();
    let kinds: Vec<_> = raised.iter().map(|a| (a.run_id.as_str(), a.kind)).collect();
    assert_eq!(kinds, [(long.as_str(), AnomalyKind::LongRunning)]);
}

/// Queued runs of `job` triggered `ago_ms` ago each, in this order.
async fn queued(s: &Store, job: &JobRow, spec: &JobSpec, ago_ms: &[i64]) -> Vec<String> {
    let mut tx = s.begin_write().await.unwrap();
    let mut ids = Vec::new();
    for ago in ago_ms {
        let id = runs::insert(&mut tx, NewRun::queued(job, spec))
            .await
            .unwrap()
            .id;
        runs::backdate(&mut tx, &id, now_ms() - ago).await.unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    ids
}

#[tokio::test]
async fn every_run_queued_too_long_is_a_slow_start_each_once() {
    let (_dir, s, spec, job) = store_with_job("orders").await;
    // Five successes that started at once: a usual start takes no time, so waiting more
    // than a minute (the default's least extra) is far from usual.
    for _ in 0..5 {
        let id = running(&s, &job, &spec, 0).await;
        succeed(&s, &id).await;
    }
    let ids = queued(&s, &job, &spec, &[180_000, 120_000, 90_000, 30_000, 10_000]).await;
    let slow = |raised: Vec<jobdock_types::Anomaly>| {
        let mut got: Vec<String> = raised
            .into_iter()
            .inspect(|a| assert_eq!(a.kind, AnomalyKind::SlowStart))
            .map(|a| a.run_id)
            .collect();
        got.sort();
        got
    };
    let mut want = ids[..3].to_vec();
    want.sort();

    let mut check = ActiveCheck::default();
    assert_eq!(slow(check.pass(&s, Vec::new(), STALL).await.unwrap()), want);
    assert!(
        check.pass(&s, Vec::new(), STALL).await.unwrap().is_empty(),
        "each once"
    );

    // The fourth has waited too long now too; the first three are not raised again, by
    // this check or by a new one (another replica's, or this one's after a restart).
    let mut tx = s.begin_write().await.unwrap();
    runs::backdate(&mut tx, &ids[3], now_ms() - 100_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        slow(check.pass(&s, Vec::new(), STALL).await.unwrap()),
        [ids[3].clone()]
    );
    let mut fresh = ActiveCheck::default();
    assert!(fresh.pass(&s, Vec::new(), STALL).await.unwrap().is_empty());
}
