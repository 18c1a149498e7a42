//! The queue as dispatch reads it, on both databases: whether anything is due, the first
//! due run of each job, a job's next one, and the note on the runs waiting behind a job's
//! first; and the queue as the anomaly check reads it.

use std::collections::HashMap;

use sqlx::Row;

use super::super::runs::{self, NewRun};
use super::super::*;
use super::{spec, store};

both!(
    each_jobs_first_due_run_comes_oldest_first,
    the_runs_behind_a_first_are_noted_once,
    what_holds_slots_is_counted_by_job_backend_and_lock,
    a_run_is_due_unless_it_waits_out_a_backoff_or_runs_elsewhere,
    the_check_reads_each_jobs_first_queued_first_attempt,
);

const DOCKER: &str = "docker";

async fn queue(s: &Store, job: &JobRow, spec: &jobdock_types::JobSpec, backend: &str) -> String {
    let mut tx = s.begin_write().await.unwrap();
    let new = NewRun {
        backend,
        ..NewRun::queued(job, spec)
    };
    let id = runs::insert(&mut tx, new).await.unwrap().id;
    tx.commit().await.unwrap();
    id
}

async fn each_jobs_first_due_run_comes_oldest_first(pg: bool) {
    let (s, _g) = store(pg).await;
    let (a, b, c) = (spec("a"), spec("b"), spec("c"));
    let mut tx = s.begin_write().await.unwrap();
    let job_a = jobs::insert(&mut tx, NewJob { spec: &a }).await.unwrap();
    let job_b = jobs::insert(&mut tx, NewJob { spec: &b }).await.unwrap();
    let job_c = jobs::insert(&mut tx, NewJob { spec: &c }).await.unwrap();
    tx.commit().await.unwrap();
    // b's first run waits out a retry's backoff: b's second run is b's first due one.
    let b_backoff = queue(&s, &job_b, &b, DOCKER).await;
    let a1 = queue(&s, &job_a, &a, DOCKER).await;
    let b1 = queue(&s, &job_b, &b, DOCKER).await;
    let a2 = queue(&s, &job_a, &a, DOCKER).await;
    let _c_elsewhere = queue(&s, &job_c, &c, "nomad").await;
    let a3 = queue(&s, &job_a, &a, DOCKER).await;
    sqlx::query("UPDATE runs SET next_attempt_at = $1 WHERE id = $2")
        .bind(now_ms() + 60_000)
        .bind(&b_backoff)
        .execute(&mut s.write_alone().await.unwrap())
        .await
        .unwrap();
    let backends = vec![DOCKER.to_string()];
    let mut tx = s.begin_claim().await.unwrap();
    let heads = runs::heads(&mut tx, &backends).await.unwrap();
    let got: Vec<_> = heads.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(
        got,
        [a1.as_str(), b1.as_str()],
        "c runs on a backend not served here"
    );
    // a's runs come one after another, and the first knows where the last is.
    let a2_due = runs::next_of_job(&mut tx, &backends, &heads[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a2_due.id, a2);
    let a3_due = runs::next_of_job(&mut tx, &backends, &a2_due)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a3_due.id, a3);
    let after_a3 = runs::next_of_job(&mut tx, &backends, &a3_due).await;
    assert!(after_a3.unwrap().is_none());
    assert_eq!(heads[0].last_seq, a3_due.seq);
    assert_eq!(
        heads[1].last_seq, heads[1].seq,
        "nothing of b is due behind b1"
    );
    assert!(runs::heads(&mut tx, &[]).await.unwrap().is_empty());
    let both = vec![DOCKER.to_string(), "nomad".to_string()];
    assert_eq!(runs::heads(&mut tx, &both).await.unwrap().len(), 3);
    tx.commit().await.unwrap();
}

async fn waiting(s: &Store, id: &str) -> (Option<String>, i64) {
    let row = sqlx::query(
        "SELECT waiting_for, (SELECT COUNT(*) FROM run_events e WHERE e.run_id = r.id \
         AND e.kind = 'waiting') AS events FROM runs r WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut s.read().await.unwrap())
    .await
    .unwrap();
    (
        row.try_get("waiting_for").unwrap(),
        row.try_get("events").unwrap(),
    )
}

async fn the_runs_behind_a_first_are_noted_once(pg: bool) {
    let (s, _g) = store(pg).await;
    let (a, b) = (spec("a"), spec("b"));
    let mut tx = s.begin_write().await.unwrap();
    let job_a = jobs::insert(&mut tx, NewJob { spec: &a }).await.unwrap();
    let job_b = jobs::insert(&mut tx, NewJob { spec: &b }).await.unwrap();
    tx.commit().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(queue(&s, &job_a, &a, DOCKER).await);
    }
    let other = queue(&s, &job_b, &b, DOCKER).await;
    let backends = vec![DOCKER.to_string()];
    let mut tx = s.begin_claim().await.unwrap();
    let first = runs::heads(&mut tx, &backends).await.unwrap().remove(0);
    assert_eq!(first.id, ids[0]);
    for _ in 0..2 {
        runs::note_behind(&mut tx, &job_a.id, first.seq, first.last_seq, "behind a1")
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        waiting(&s, &ids[0]).await,
        (None, 0),
        "the first is not behind itself"
    );
    for id in &ids[1..] {
        assert_eq!(
            waiting(&s, id).await,
            (Some("behind a1".into()), 1),
            "noted once"
        );
    }
    assert_eq!(
        waiting(&s, &other).await,
        (None, 0),
        "another job's run is untouched"
    );
}

fn counts(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

async fn what_holds_slots_is_counted_by_job_backend_and_lock(pg: bool) {
    let (s, _g) = store(pg).await;
    let (mut a, mut b) = (spec("a"), spec("b"));
    a.lock_keys = vec!["source".into(), "sink".into()];
    a.max_parallel = Some(3);
    b.lock_keys = vec!["source".into()];
    let mut tx = s.begin_write().await.unwrap();
    let job_a = jobs::insert(&mut tx, NewJob { spec: &a }).await.unwrap();
    let job_b = jobs::insert(&mut tx, NewJob { spec: &b }).await.unwrap();
    let c = spec("c");
    let job_c = jobs::insert(&mut tx, NewJob { spec: &c }).await.unwrap();
    locks::set_capacity(&mut tx, "source", 5).await.unwrap();
    tx.commit().await.unwrap();
    let a1 = queue(&s, &job_a, &a, DOCKER).await;
    let a2 = queue(&s, &job_a, &a, DOCKER).await;
    let a3 = queue(&s, &job_a, &a, DOCKER).await;
    let b1 = queue(&s, &job_b, &b, "nomad").await;
    let c1 = queue(&s, &job_c, &c, DOCKER).await;
    let mut tx = s.begin_claim().await.unwrap();
    assert_eq!(runs::held(&mut tx).await.unwrap().jobs, HashMap::new());
    for id in [&a1, &a2, &b1] {
        let started = runs::mark_starting(&mut tx, id, "me", now_ms() + 30_000).await;
        assert!(started.unwrap());
    }
    let held = runs::held(&mut tx).await.unwrap();
    assert_eq!(held.jobs, counts(&[(&job_a.id, 2), (&job_b.id, 1)]));
    assert_eq!(held.backends, counts(&[(DOCKER, 2), ("nomad", 1)]));
    assert_eq!(held.locks, counts(&[("source", 3), ("sink", 2)]));
    assert_eq!(held.capacities, counts(&[("source", 5)]));
    // One key's holders, as a trigger and the lock's page read them: the queued run's lock
    // rows are not counted.
    let usage = locks::lock_usage(&mut tx, "source").await.unwrap();
    assert_eq!(usage, (3, 5));
    assert_eq!(locks::lock_usage(&mut tx, "sink").await.unwrap(), (2, 1));
    let holders = locks::holding_lock(&mut tx, "source").await.unwrap();
    assert_eq!(
        holders,
        [a1.clone(), a2.clone(), b1.clone()],
        "oldest first"
    );
    // Each job's first due run comes with the job's `max_parallel`, 1 when unset.
    let heads = runs::heads(&mut tx, &[DOCKER.to_string()]).await.unwrap();
    let limits: Vec<_> = heads
        .iter()
        .map(|d| (d.id.as_str(), d.max_parallel))
        .collect();
    assert_eq!(limits, [(a3.as_str(), 3), (c1.as_str(), 1)]);
    tx.commit().await.unwrap();
    let ids = |runs: Vec<locks::LockRun>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    let holding = ids(s.lock_runs("source", false).await.unwrap());
    assert_eq!(holding, [a1, a2, b1]);
    assert_eq!(ids(s.lock_runs("source", true).await.unwrap()), [a3]);
}

async fn backoff(s: &Store, id: &str) {
    sqlx::query("UPDATE runs SET next_attempt_at = $1 WHERE id = $2")
        .bind(now_ms() + 60_000)
        .bind(id)
        .execute(&mut s.write_alone().await.unwrap())
        .await
        .unwrap();
}

async fn a_run_is_due_unless_it_waits_out_a_backoff_or_runs_elsewhere(pg: bool) {
    let (s, _g) = store(pg).await;
    let a = spec("a");
    let mut tx = s.begin_write().await.unwrap();
    let job = jobs::insert(&mut tx, NewJob { spec: &a }).await.unwrap();
    tx.commit().await.unwrap();
    let docker = vec![DOCKER.to_string()];
    assert!(!runs::any_due(&s, &docker).await.unwrap(), "an empty queue");
    let retry = queue(&s, &job, &a, DOCKER).await;
    backoff(&s, &retry).await;
    queue(&s, &job, &a, "nomad").await;
    assert!(!runs::any_due(&s, &docker).await.unwrap());
    assert!(!runs::any_due(&s, &[]).await.unwrap());
    assert!(runs::any_due(&s, &["nomad".to_string()]).await.unwrap());
    queue(&s, &job, &a, DOCKER).await;
    assert!(runs::any_due(&s, &docker).await.unwrap());
}

async fn the_check_reads_each_jobs_first_queued_first_attempt(pg: bool) {
    let (s, _g) = store(pg).await;
    let (a, b) = (spec("a"), spec("b"));
    let mut tx = s.begin_write().await.unwrap();
    let job_a = jobs::insert(&mut tx, NewJob { spec: &a }).await.unwrap();
    let job_b = jobs::insert(&mut tx, NewJob { spec: &b }).await.unwrap();
    tx.commit().await.unwrap();
    let going = queue(&s, &job_a, &a, DOCKER).await;
    let mut tx = s.begin_claim().await.unwrap();
    assert!(
        runs::mark_starting(&mut tx, &going, "me", now_ms() + 30_000)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    // a's queue: a retry (not a first attempt), then three first attempts; b's: one.
    let retry = queue(&s, &job_a, &a, DOCKER).await;
    sqlx::query("UPDATE runs SET attempt = 2 WHERE id = $1")
        .bind(&retry)
        .execute(&mut s.write_alone().await.unwrap())
        .await
        .unwrap();
    let mut a_queued = Vec::new();
    for _ in 0..3 {
        a_queued.push(queue(&s, &job_a, &a, DOCKER).await);
    }
    let b1 = queue(&s, &job_b, &b, DOCKER).await;
    let watched = s.first_queued_runs().await.unwrap();
    let got: Vec<&str> = watched.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, [a_queued[0].as_str(), b1.as_str()], "{going} runs");
    assert_eq!(watched[0].job_id, job_a.id);

    // Behind a's first: the first attempts triggered by a time, after a place in the queue.
    let mut tx = s.begin_write().await.unwrap();
    runs::backdate(&mut tx, &a_queued[1], now_ms() - 60_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let since = |after: i64, by: i64, limit: i64| {
        let s = s.clone();
        let job = job_a.id.clone();
        async move {
            let runs = s
                .queued_waiting_since(&job, after, by, limit)
                .await
                .unwrap();
            runs.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }
    };
    let first = watched[0].seq;
    assert_eq!(
        since(first, now_ms() - 30_000, 10).await,
        [a_queued[1].clone()]
    );
    assert_eq!(since(first, now_ms(), 10).await, a_queued[1..].to_vec());
    assert_eq!(since(first, now_ms(), 1).await, [a_queued[1].clone()]);
    assert_eq!(since(first - 1, now_ms(), 10).await, a_queued.to_vec());
}
