//! Run statistics and retention, on both databases: what each cut prunes, what it never
//! prunes, and that statistics outlive the runs.

use jobdock_types::RunStatus;
use sqlx::Row;

use super::super::retention::{Cut, Policy, Step, BATCH_LINES};
use super::super::runs::{self, NewRun, Outcome};
use super::super::stats;
use super::super::*;
use super::{spec, store};

both!(
    finishing_a_run_records_its_stats,
    the_age_cut_prunes_old_final_runs_with_their_logs,
    the_count_cut_keeps_each_jobs_newest_runs,
    young_unfinished_and_fenced_runs_are_never_pruned,
    a_long_log_goes_in_pieces_before_its_run,
    concurrent_prunes_delete_each_run_once,
    statistics_are_trimmed_to_the_newest_per_job,
);

const DAY: i64 = 86_400_000;

async fn job(s: &Store, name: &str) -> String {
    let mut tx = s.begin_write().await.unwrap();
    let j = jobs::insert(&mut tx, NewJob { spec: &spec(name) })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    j.id
}

async fn queued(s: &Store, job_id: &str, job_name: &str) -> String {
    let sp = spec(job_name);
    let mut tx = s.begin_write().await.unwrap();
    let new = NewRun {
        job_id,
        job_name,
        status: RunStatus::Queued,
        spec: &sp,
        max_attempts: 1,
        backend: "docker",
        trigger_kind: "api",
        triggered_by: None,
        idempotency_key: None,
        request_hash: None,
        reason: None,
    };
    let run = runs::insert(&mut tx, new).await.unwrap();
    tx.commit().await.unwrap();
    run.id
}

/// A run taken through the real transitions to `status`, then moved back in time so that
/// it finished `age_ms` ago, with `lines` log lines.
async fn finished(s: &Store, job_id: &str, job_name: &str, age_ms: i64, lines: usize) -> String {
    let id = queued(s, job_id, job_name).await;
    let mut tx = s.begin_write().await.unwrap();
    assert!(runs::mark_starting(&mut tx, &id, "me", now_ms() + 30_000)
        .await
        .unwrap());
    assert!(runs::mark_running(&mut tx, &id, 1, now_ms()).await.unwrap());
    tx.commit().await.unwrap();
    if lines > 0 {
        let batch: Vec<logs::NewLine> = (0..lines)
            .map(|i| logs::NewLine {
                attempt: 1,
                ts: i as i64,
                stream: "stdout",
                line: format!("line {i}"),
            })
            .collect();
        s.append_logs(&id, &batch, Default::default())
            .await
            .unwrap();
    }
    let mut tx = s.begin_write().await.unwrap();
    let o = Outcome {
        exit_code: Some(0),
        ..Default::default()
    };
    assert!(
        runs::finish(&mut tx, &id, 1, RunStatus::Succeeded, &o, true)
            .await
            .unwrap()
            .is_some()
    );
    tx.commit().await.unwrap();
    backdate(s, &id, age_ms).await;
    id
}

async fn backdate(s: &Store, id: &str, by_ms: i64) {
    sqlx::query(
        "UPDATE runs SET created_at = created_at - $1, started_at = started_at - $1, \
         first_started_at = first_started_at - $1, finished_at = finished_at - $1 WHERE id = $2",
    )
    .bind(by_ms)
    .bind(id)
    .execute(&mut s.write_alone().await.unwrap())
    .await
    .unwrap();
}

async fn count(s: &Store, sql: &str, id: &str) -> i64 {
    sqlx::query(sql)
        .bind(id)
        .fetch_one(&mut s.read().await.unwrap())
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

async fn exists(s: &Store, id: &str) -> bool {
    s.status_of(id).await.unwrap().is_some()
}

/// Prunes under `cut` until nothing is left; runs deleted.
async fn prune(s: &Store, policy: &Policy, cut: Cut<'_>) -> u64 {
    let mut n = 0;
    loop {
        match s.prune_step(policy, cut, now_ms()).await.unwrap() {
            Step::Deleted(0) | Step::Nothing => return n,
            Step::Deleted(d) => n += d,
            Step::Trimmed => {}
            Step::Busy => panic!("nobody else prunes here"),
        }
    }
}

const POLICY: Policy = Policy {
    days: 30,
    max_runs_per_job: 1000,
};

async fn finishing_a_run_records_its_stats(pg: bool) {
    let (s, _g) = store(pg).await;
    let j = job(&s, "j").await;
    let older = finished(&s, &j, "j", 0, 0).await;
    let newer = finished(&s, &j, "j", 0, 0).await;
    // Newest first even within one millisecond: ties go by id, and ids grow with time.
    sqlx::query("UPDATE run_stats SET finished_at = finished_at - 5 WHERE run_id = $1")
        .bind(&older)
        .execute(&mut s.write_alone().await.unwrap())
        .await
        .unwrap();
    // A failure: recorded, but not among the successes.
    let failed = queued(&s, &j, "j").await;
    let mut tx = s.begin_write().await.unwrap();
    runs::mark_starting(&mut tx, &failed, "me", now_ms() + 30_000)
        .await
        .unwrap();
    let o = Outcome {
        exit_code: Some(3),
        ..Default::default()
    };
    runs::finish(&mut tx, &failed, 1, RunStatus::Failed, &o, true)
        .await
        .unwrap();
    // Finishing again changes nothing: the compare-and-set refuses, no second row.
    assert!(
        runs::finish(&mut tx, &failed, 1, RunStatus::Failed, &o, true)
            .await
            .unwrap()
            .is_none()
    );
    tx.commit().await.unwrap();

    let mut conn = s.read().await.unwrap();
    let ok = stats::recent_successes(&mut conn, "j", 10).await.unwrap();
    assert_eq!(
        ok.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        vec![newer.as_str(), older.as_str()]
    );
    assert!(ok.iter().all(|r| r.status == RunStatus::Succeeded));
    assert!(ok[0].duration_ms.unwrap() >= 0 && ok[0].start_latency_ms.unwrap() >= 0);
    assert_eq!(
        stats::recent_successes(&mut conn, "j", 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(stats::recent_successes(&mut conn, "other", 10)
        .await
        .unwrap()
        .is_empty());
    let all = stats::recent(&mut conn, "j", 10).await.unwrap();
    let f = all.iter().find(|r| r.run_id == failed).unwrap();
    assert_eq!(f.status, RunStatus::Failed);
    assert_eq!(f.duration_ms, None, "it never ran");
    assert_eq!(stats::counts(&mut conn, "j").await.unwrap(), (3, 2));
    drop(conn);
    let rows = s.job_stats("j", 20, 20).await.unwrap();
    assert_eq!((rows.count, rows.successes), (3, 2));
    assert_eq!(rows.recent.len(), 3);
}

async fn the_age_cut_prunes_old_final_runs_with_their_logs(pg: bool) {
    let (s, _g) = store(pg).await;
    let j = job(&s, "j").await;
    let old = finished(&s, &j, "j", 40 * DAY, 3).await;
    let kept = finished(&s, &j, "j", 20 * DAY, 3).await;
    assert_eq!(prune(&s, &POLICY, Cut::Age).await, 1);
    assert!(!exists(&s, &old).await);
    assert!(exists(&s, &kept).await);
    for table in ["run_logs", "run_attempts", "run_locks"] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE run_id = $1");
        assert_eq!(count(&s, &sql, &old).await, 0, "{table}");
    }
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM run_logs WHERE run_id = $1", &kept).await,
        3
    );
    let sql = "SELECT COUNT(*) FROM run_stats WHERE run_id = $1";
    assert_eq!(count(&s, sql, &old).await, 1, "statistics outlive the run");
    assert_eq!(
        prune(&s, &POLICY, Cut::Age).await,
        0,
        "a second pass finds nothing"
    );
}

async fn the_count_cut_keeps_each_jobs_newest_runs(pg: bool) {
    let (s, _g) = store(pg).await;
    let a = job(&s, "a").await;
    let b = job(&s, "b").await;
    let mut of_a = Vec::new();
    for _ in 0..5 {
        of_a.push(finished(&s, &a, "a", 10 * DAY, 1).await);
    }
    let of_b = [
        finished(&s, &b, "b", 10 * DAY, 1).await,
        finished(&s, &b, "b", 10 * DAY, 1).await,
    ];
    let policy = Policy {
        days: 30,
        max_runs_per_job: 2,
    };
    assert_eq!(s.jobs_over_count(2).await.unwrap(), vec!["a".to_string()]);
    assert_eq!(prune(&s, &policy, Cut::Count("a")).await, 3);
    assert_eq!(prune(&s, &policy, Cut::Count("b")).await, 0);
    for (i, id) in of_a.iter().enumerate() {
        assert_eq!(exists(&s, id).await, i >= 3, "run {i} of a");
    }
    for id in &of_b {
        assert!(exists(&s, id).await);
    }
    let mut conn = s.read().await.unwrap();
    assert_eq!(stats::counts(&mut conn, "a").await.unwrap(), (5, 5));
}

async fn young_unfinished_and_fenced_runs_are_never_pruned(pg: bool) {
    let (s, _g) = store(pg).await;
    let j = job(&s, "j").await;
    // Final but younger than the 7-day floor, beyond a count of 1 and past `days: 1`.
    let young = [
        finished(&s, &j, "j", 3 * DAY, 0).await,
        finished(&s, &j, "j", 3 * DAY, 0).await,
    ];
    // Unfinished for 60 days: queued, and running.
    let waiting = queued(&s, &j, "j").await;
    backdate(&s, &waiting, 60 * DAY).await;
    let running = queued(&s, &j, "j").await;
    let mut tx = s.begin_write().await.unwrap();
    runs::mark_starting(&mut tx, &running, "me", now_ms() + 30_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    backdate(&s, &running, 60 * DAY).await;
    // Lost 60 days ago while its container was not confirmed gone: it keeps its slots.
    let fenced = queued(&s, &j, "j").await;
    let mut tx = s.begin_write().await.unwrap();
    runs::mark_starting(&mut tx, &fenced, "me", now_ms() + 30_000)
        .await
        .unwrap();
    runs::finish(
        &mut tx,
        &fenced,
        1,
        RunStatus::Lost,
        &Outcome::default(),
        false,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    backdate(&s, &fenced, 60 * DAY).await;

    // Triggered just now, but its end as a backend's clock reported it is long past.
    let skewed = finished(&s, &j, "j", 0, 0).await;
    sqlx::query("UPDATE runs SET finished_at = finished_at - $1 WHERE id = $2")
        .bind(60 * DAY)
        .bind(&skewed)
        .execute(&mut s.write_alone().await.unwrap())
        .await
        .unwrap();

    // Whatever the policy says.
    let harsh = Policy {
        days: 1,
        max_runs_per_job: 1,
    };
    assert_eq!(prune(&s, &harsh, Cut::Age).await, 0);
    assert_eq!(prune(&s, &harsh, Cut::Count("j")).await, 0);
    for id in young.iter().chain([&waiting, &running, &fenced, &skewed]) {
        assert!(exists(&s, id).await, "{id}");
    }
    // Once the fenced run's container is confirmed gone it may go.
    s.release_slot(&fenced).await.unwrap();
    assert_eq!(prune(&s, &harsh, Cut::Age).await, 1);
    assert!(!exists(&s, &fenced).await);
}

async fn a_long_log_goes_in_pieces_before_its_run(pg: bool) {
    let (s, _g) = store(pg).await;
    let j = job(&s, "j").await;
    let id = finished(&s, &j, "j", 40 * DAY, 3).await;
    // Pretend the log is longer than a step may delete at once.
    sqlx::query("UPDATE runs SET log_lines = $1 WHERE id = $2")
        .bind(BATCH_LINES + 1)
        .bind(&id)
        .execute(&mut s.write_alone().await.unwrap())
        .await
        .unwrap();
    let now = now_ms();
    assert_eq!(
        s.prune_step(&POLICY, Cut::Age, now).await.unwrap(),
        Step::Trimmed
    );
    assert!(exists(&s, &id).await);
    let sql = "SELECT COUNT(*) FROM run_logs WHERE run_id = $1";
    assert_eq!(count(&s, sql, &id).await, 0);
    assert_eq!(
        s.prune_step(&POLICY, Cut::Age, now).await.unwrap(),
        Step::Deleted(1)
    );
    assert_eq!(
        s.prune_step(&POLICY, Cut::Age, now).await.unwrap(),
        Step::Nothing
    );
}

async fn concurrent_prunes_delete_each_run_once(pg: bool) {
    let (s, _g) = store(pg).await;
    let j = job(&s, "j").await;
    for _ in 0..12 {
        finished(&s, &j, "j", 40 * DAY, 2).await;
    }
    // Two replicas at once: one may find the other busy and stop; none fails, and between
    // them (and a last pass) every old run goes once.
    let one = || async {
        let mut n = 0;
        loop {
            match s.prune_step(&POLICY, Cut::Age, now_ms()).await.unwrap() {
                Step::Deleted(d) if d > 0 => n += d,
                Step::Trimmed => {}
                _ => return n,
            }
        }
    };
    let (a, b) = tokio::join!(one(), one());
    let rest = prune(&s, &POLICY, Cut::Age).await;
    assert_eq!(a + b + rest, 12);
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM runs")
        .fetch_one(&mut s.read().await.unwrap())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(left, 0);
}

async fn statistics_are_trimmed_to_the_newest_per_job(pg: bool) {
    let (s, _g) = store(pg).await;
    let j = job(&s, "j").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(finished(&s, &j, "j", 0, 0).await);
    }
    let k = job(&s, "k").await;
    finished(&s, &k, "k", 0, 0).await;
    for (i, id) in ids.iter().enumerate() {
        sqlx::query("UPDATE run_stats SET finished_at = $1 WHERE run_id = $2")
            .bind(1_000 + i as i64)
            .bind(id)
            .execute(&mut s.write_alone().await.unwrap())
            .await
            .unwrap();
    }
    assert_eq!(s.jobs_over_stats(2).await.unwrap(), vec!["j".to_string()]);
    let mut tx = s.begin_write().await.unwrap();
    assert_eq!(stats::trim(&mut tx, "j", 2, 1).await.unwrap(), 1);
    assert_eq!(stats::trim(&mut tx, "j", 2, 500).await.unwrap(), 1);
    assert_eq!(stats::trim(&mut tx, "j", 2, 500).await.unwrap(), 0);
    tx.commit().await.unwrap();
    let mut conn = s.read().await.unwrap();
    let left = stats::recent(&mut conn, "j", 10).await.unwrap();
    assert_eq!(
        left.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        vec![ids[3].as_str(), ids[2].as_str()]
    );
    assert_eq!(stats::counts(&mut conn, "k").await.unwrap(), (1, 1));
}
