//! Parallelism limits, on SQLite and on PostgreSQL: max_parallel, shared locks taken all at
//! once, the per-backend cap, the queue cap, and re-runs through the same gate. Concurrency
//! is measured from the containers' own output.

use std::time::Duration;

use jobdock_types::{OnConflict, RunStatus};
use serde_json::json;

use crate::{both, builder, intervals, max_overlap, sh_job};

const WORK: &str = "echo start; sleep 1; echo end";

async fn trigger_n(c: &jobdock_client::Client, job: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            c.trigger(job, &Default::default(), None)
                .await
                .unwrap()
                .0
                .id,
        );
    }
    ids
}

async fn all_succeed(c: &jobdock_client::Client, ids: &[String]) {
    for id in ids {
        let run = c
            .wait_until_final(id, Duration::from_secs(180))
            .await
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
}

both!(
    max_parallel_holds_and_raising_it_releases_the_queue,
    shared_locks_hold_and_are_taken_all_at_once,
    the_backend_cap_and_the_queue_cap_hold
);

async fn max_parallel_holds_and_raising_it_releases_the_queue(pg: bool) {
    let app = builder().postgres(pg).start().await;
    let c = app.admin();
    let mut s = sh_job("pair", WORK);
    s.max_parallel = Some(2);
    c.create_job(&s).await.unwrap();
    let ids = trigger_n(&c, "pair", 6).await;
    all_succeed(&c, &ids).await;
    let iv = intervals(&c, &ids).await;
    assert_eq!(iv.len(), 6);
    assert_eq!(max_overlap(&iv), 2, "{iv:?}");

    // Queued runs follow the job's current limit.
    let mut slow = sh_job("widen", "echo start; sleep 3; echo end");
    slow.max_parallel = Some(1);
    c.create_job(&slow).await.unwrap();
    let ids = trigger_n(&c, "widen", 3).await;
    c.patch_job("widen", &json!({"max_parallel": 3}))
        .await
        .unwrap();
    all_succeed(&c, &ids).await;
    assert!(
        max_overlap(&intervals(&c, &ids).await) >= 2,
        "raising max_parallel let queued runs start"
    );
}

async fn shared_locks_hold_and_are_taken_all_at_once(pg: bool) {
    let app = builder().postgres(pg).start().await;
    let c = app.admin();
    // Two jobs share two locks, named in opposite orders: all or nothing, so no deadlock.
    for (name, keys) in [
        ("loader-a", ["erp-api", "dwh"]),
        ("loader-b", ["dwh", "erp-api"]),
    ] {
        let mut s = sh_job(name, WORK);
        s.max_parallel = Some(5);
        s.lock_keys = keys.iter().map(|k| k.to_string()).collect();
        c.create_job(&s).await.unwrap();
    }
    let mut ids = trigger_n(&c, "loader-a", 3).await;
    ids.extend(trigger_n(&c, "loader-b", 3).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lock = c.get_lock("erp-api").await.unwrap();
    assert_eq!(lock.capacity, 1);
    assert!(
        lock.holders.len() <= 1 && lock.holders.len() + lock.waiters.len() >= 4,
        "{lock:?}"
    );
    all_succeed(&c, &ids).await;
    assert_eq!(
        max_overlap(&intervals(&c, &ids).await),
        1,
        "capacity 1: one at a time across both jobs"
    );

    // A larger capacity lets two in at once; a skip/reject job sees a full lock as a conflict.
    for key in ["erp-api", "dwh"] {
        assert_eq!(c.set_lock_capacity(key, 2).await.unwrap().capacity, 2);
    }
    let mut ids = trigger_n(&c, "loader-a", 3).await;
    ids.extend(trigger_n(&c, "loader-b", 3).await);
    let mut s = sh_job("polite", WORK);
    s.lock_keys = vec!["erp-api".into()];
    s.on_conflict = Some(OnConflict::Skip);
    c.create_job(&s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (skipped, _) = c
        .trigger("polite", &Default::default(), None)
        .await
        .unwrap();
    assert_eq!(skipped.status, RunStatus::Skipped, "{skipped:?}");
    assert!(skipped.reason.unwrap().contains("lock `erp-api` is full"));
    all_succeed(&c, &ids).await;
    assert_eq!(max_overlap(&intervals(&c, &ids).await), 2);
    let locks = c.list_locks().await.unwrap();
    let keys: Vec<&str> = locks.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, vec!["dwh", "erp-api"]);
    assert!(
        locks.iter().all(|l| l.holders.is_empty()),
        "no lock leaks: {locks:?}"
    );
    // The store forgets which locks an ended run needed: the lock checks read a key's rows,
    // which must not grow with every run ever made.
    assert_eq!(
        lock_rows(&app).await,
        0,
        "the ended runs' lock rows are gone"
    );
}

/// The rows of `run_locks`, read from the engine's database.
async fn lock_rows(app: &jobdock_testkit::TestApp) -> i64 {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let url = match app.db() {
        Some(db) => db.url.clone(),
        None => format!(
            "sqlite://{}?mode=ro",
            app.data_dir().join("jobdock.db").display()
        ),
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) AS n FROM run_locks")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::Row::try_get(&row, "n").unwrap()
}

async fn the_backend_cap_and_the_queue_cap_hold(pg: bool) {
    let app = builder()
        .postgres(pg)
        .arg("--max-running")
        .arg("docker=1")
        .start()
        .await;
    let c = app.admin();
    for name in ["cap-a", "cap-b"] {
        let mut s = sh_job(name, WORK);
        s.max_parallel = Some(3);
        s.max_queued = Some(4);
        c.create_job(&s).await.unwrap();
    }
    let mut ids = trigger_n(&c, "cap-a", 2).await;
    ids.extend(trigger_n(&c, "cap-b", 2).await);
    all_succeed(&c, &ids).await;
    assert_eq!(
        max_overlap(&intervals(&c, &ids).await),
        1,
        "one container at a time on this backend"
    );

    // The queue cap: past `max_queued` waiting runs, a trigger gets 429.
    let mut s = sh_job("crowded", "sleep 30");
    s.max_queued = Some(2);
    s.stop_grace_seconds = Some(0);
    c.create_job(&s).await.unwrap();
    let mut held = trigger_n(&c, "crowded", 1).await;
    crate::wait_for(&c, &held[0], 60, |r| r.status == RunStatus::Running).await;
    held.extend(trigger_n(&c, "crowded", 2).await); // one runs, two wait
    let err = c
        .trigger("crowded", &Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(429));
    // A re-run passes the same gate.
    assert_eq!(c.rerun(&held[0]).await.unwrap_err().status(), Some(429));
    for id in held.drain(..) {
        c.cancel_run(&id).await.unwrap();
    }
    let first = c
        .wait_until_final(&ids[0], Duration::from_secs(5))
        .await
        .unwrap();
    let rerun = c.rerun(&first.id).await.unwrap();
    assert_eq!(rerun.trigger, "rerun");
    assert_eq!(rerun.status, RunStatus::Queued);
    let done = c
        .wait_until_final(&rerun.id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
}
