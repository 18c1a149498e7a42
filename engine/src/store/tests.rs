//! Store tests: every test runs on embedded SQLite and on PostgreSQL.

use jobdock_testkit::postgres::TestDb;
use jobdock_types::{JobSpec, RunStatus};
use serde_json::json;

use super::*;

/// A store on a fresh database; the guard keeps the PostgreSQL database (or the SQLite
/// directory) alive for the test.
pub(super) async fn store(pg: bool) -> (Store, Box<dyn std::any::Any>) {
    if pg {
        let db = TestDb::create().await;
        (Store::connect(&db.url).await.unwrap(), Box::new(db))
    } else {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        (s, Box::new(dir))
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(false).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(true).await
            }
        }
    )*};
}
pub(crate) use both;

both!(
    anomalies_are_raised_once_and_a_success_closes_only_ended_ones,
    job_names_are_unique_among_live_jobs,
    secrets_are_replaced_and_found_by_sealing_key,
    tokens_are_found_by_hash_until_revoked,
    audit_filters_and_pages_newest_first,
    settings_are_created_once,
    a_jobs_unfinished_runs_are_counted_with_the_oldest,
    a_runs_lock_rows_last_while_it_waits_or_holds_its_slots,
    batches_of_any_length_are_stored_whole_and_in_order,
);

fn spec(name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        image: "img".into(),
        ..Default::default()
    }
}

async fn job_names_are_unique_among_live_jobs(pg: bool) {
    let (s, _g) = store(pg).await;
    let mut tx = s.begin_write().await.unwrap();
    let a = jobs::insert(&mut tx, NewJob { spec: &spec("a") })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = s.begin_write().await.unwrap();
    let dup = jobs::insert(&mut tx, NewJob { spec: &spec("a") }).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    drop(tx);
    let mut tx = s.begin_write().await.unwrap();
    jobs::soft_delete(&mut tx, &a.id).await.unwrap();
    let b = jobs::insert(&mut tx, NewJob { spec: &spec("a") })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(s.job("a").await.unwrap().id, b.id);
    let listed = s.jobs_after(None, 10).await.unwrap();
    assert_eq!(listed.len(), 1, "the deleted job is not listed");
}

async fn secrets_are_replaced_and_found_by_sealing_key(pg: bool) {
    let (s, _g) = store(pg).await;
    let mut tx = s.begin_write().await.unwrap();
    let job = jobs::insert(&mut tx, NewJob { spec: &spec("j") })
        .await
        .unwrap();
    let sealed = |key: &str, key_id: &str| SealedSecret {
        key: key.into(),
        key_id: key_id.into(),
        nonce: vec![1; 12],
        ciphertext: vec![0, 255, 7],
    };
    secrets::replace_all(&mut tx, &job.id, &[sealed("A", "k1"), sealed("B", "k2")])
        .await
        .unwrap();
    secrets::put(&mut tx, &job.id, &sealed("A", "k2"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.secret_names(&job.id).await.unwrap(), vec!["A", "B"]);
    assert_eq!(
        s.secrets(&job.id).await.unwrap()[0].ciphertext,
        vec![0, 255, 7]
    );
    let samples = s.sealing_key_samples().await.unwrap();
    assert_eq!(samples.len(), 1, "only k2 seals anything now");
    assert_eq!(samples[0].1.key_id, "k2");
    let mut tx = s.begin_write().await.unwrap();
    assert_eq!(
        secrets::not_sealed_with(&mut tx, "k1").await.unwrap().len(),
        2
    );
    assert!(secrets::delete(&mut tx, &job.id, "A").await.unwrap());
    assert!(!secrets::delete(&mut tx, &job.id, "A").await.unwrap());
    jobs::soft_delete(&mut tx, &job.id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        s.secret_names(&job.id).await.unwrap().is_empty(),
        "a deleted job's secrets go"
    );
}

async fn tokens_are_found_by_hash_until_revoked(pg: bool) {
    let (s, _g) = store(pg).await;
    let mut tx = s.begin_write().await.unwrap();
    assert!(!tokens::any_exists(&mut tx).await.unwrap());
    let patterns = vec!["a-*".to_string()];
    let row = tokens::insert(
        &mut tx,
        NewTokenRow {
            name: "n",
            scope: "read",
            jobs: Some(&patterns),
            token_hash: &[9; 32],
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let found = s.token_by_hash(&[9; 32]).await.unwrap().unwrap();
    assert_eq!(found.jobs, Some(patterns));
    s.token_used(&row.id).await.unwrap();
    assert!(s
        .token_by_hash(&[9; 32])
        .await
        .unwrap()
        .unwrap()
        .last_used_at
        .is_some());
    let mut tx = s.begin_write().await.unwrap();
    assert!(tokens::revoke(&mut tx, &row.id).await.unwrap().is_some());
    assert!(tokens::revoke(&mut tx, &row.id).await.unwrap().is_none());
    assert!(
        tokens::any_exists(&mut tx).await.unwrap(),
        "revoked tokens still count for bootstrap"
    );
    tx.commit().await.unwrap();
    assert!(s.token_by_hash(&[9; 32]).await.unwrap().is_none());
    assert!(s.tokens_after(None, 10).await.unwrap().is_empty());
}

async fn audit_filters_and_pages_newest_first(pg: bool) {
    let (s, _g) = store(pg).await;
    let mut tx = s.begin_write().await.unwrap();
    for (action, target) in [
        ("job.create", "a"),
        ("job.create", "b"),
        ("job.delete", "a"),
    ] {
        let e = NewAuditEntry {
            action,
            target,
            detail: json!({"x": 1}),
            ..Default::default()
        };
        audit::record(&mut tx, e).await.unwrap();
    }
    tx.commit().await.unwrap();
    let all = s.audit(AuditFilter::default(), 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        vec!["a", "b", "a"]
    );
    assert_eq!(all[0].action, "job.delete");
    assert_eq!(all[0].detail, json!({"x": 1}));
    let older = s
        .audit(
            AuditFilter {
                before_id: Some(all[0].id),
                ..Default::default()
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(older[0].target, "b");
    let only_a = s
        .audit(
            AuditFilter {
                target: Some("a"),
                action: Some("job.create"),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(only_a.len(), 1);
}

async fn settings_are_created_once(pg: bool) {
    let (s, _g) = store(pg).await;
    let first = s
        .setting_or_init("installation_id", || "one".into())
        .await
        .unwrap();
    let second = s
        .setting_or_init("installation_id", || "two".into())
        .await
        .unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("one", "one"));
}

mod connections;
mod queue;
mod retention;

async fn anomalies_are_raised_once_and_a_success_closes_only_ended_ones(pg: bool) {
    use jobdock_types::AnomalyKind;
    let (s, _g) = store(pg).await;
    let spec = spec("j");
    let mut tx = s.begin_write().await.unwrap();
    let job = jobs::insert(&mut tx, NewJob { spec: &spec }).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let new = runs::NewRun::queued(&job, &spec);
        ids.push(runs::insert(&mut tx, new).await.unwrap().id);
    }
    let raise = |run: usize, kind| anomalies::NewAnomaly {
        run_id: &ids[run],
        attempt: 1,
        job: "j",
        kind,
        message: format!("{kind} happened"),
        expected: Some(1.0),
        observed: Some(9.5),
    };
    let first = anomalies::raise(&mut tx, raise(0, AnomalyKind::LongRunning)).await;
    assert!(first.unwrap().is_some());
    let again = anomalies::raise(&mut tx, raise(0, AnomalyKind::LongRunning)).await;
    assert!(again.unwrap().is_none(), "one of a kind per run");
    let ended = anomalies::raise(&mut tx, raise(1, AnomalyKind::TimedOut)).await;
    assert_eq!(ended.unwrap().unwrap().observed, Some(9.5));
    let closed = anomalies::close_for_job(&mut tx, "j", "another-run", "a later success")
        .await
        .unwrap();
    assert_eq!(closed, 1, "only the ended run's anomaly");
    tx.commit().await.unwrap();
    let open = s
        .anomalies(
            anomalies::AnomalyFilter {
                open: Some(true),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].kind, open[0].run_id.as_str()),
        (AnomalyKind::LongRunning, ids[0].as_str())
    );
    let events = s.events(&ids[0]).await.unwrap();
    let raised: Vec<_> = events
        .iter()
        .filter(|e| e.kind == jobdock_types::RunEventKind::Anomaly)
        .collect();
    assert_eq!(raised.len(), 1, "{events:?}");
    // The one-statement view of a run agrees with the separate reads, open and closed
    // anomalies alike.
    for id in &ids {
        let (run, attempts, anomalies) = s.run_view(id).await.unwrap();
        assert_eq!(run.id, *id);
        assert_eq!(anomalies, s.anomalies_of_runs(&[id]).await.unwrap());
        assert_eq!(anomalies.len(), 1);
        assert_eq!(attempts, s.attempts(id).await.unwrap());
    }
    assert!(matches!(
        s.run_view("no-such-run").await,
        Err(crate::store::StoreError::NotFound)
    ));
}

/// What a trigger learns of its job's unfinished runs: how many, how many queued, the oldest
/// (queued or started); ended runs and other jobs' runs do not count.
async fn a_jobs_unfinished_runs_are_counted_with_the_oldest(pg: bool) {
    let (s, _g) = store(pg).await;
    let (a, b) = (spec("a"), spec("b"));
    let mut tx = s.begin_write().await.unwrap();
    let job_a = jobs::insert(&mut tx, NewJob { spec: &a }).await.unwrap();
    let job_b = jobs::insert(&mut tx, NewJob { spec: &b }).await.unwrap();
    assert_eq!(
        runs::unfinished_of_job(&mut tx, &job_a.id).await.unwrap(),
        runs::Unfinished {
            count: 0,
            queued: 0,
            first: None
        }
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let new = runs::NewRun::queued(&job_a, &a);
        ids.push(runs::insert(&mut tx, new).await.unwrap().id);
    }
    runs::insert(&mut tx, runs::NewRun::queued(&job_b, &b))
        .await
        .unwrap();
    assert!(runs::cancel_queued(&mut tx, &ids[0], "test").await.unwrap());
    assert_eq!(
        runs::unfinished_of_job(&mut tx, &job_a.id).await.unwrap(),
        runs::Unfinished {
            count: 2,
            queued: 2,
            first: Some(ids[1].clone())
        }
    );
    // A newer run that started counts as unfinished; the older queued one is still first.
    assert!(runs::mark_starting(&mut tx, &ids[2], "replica", i64::MAX)
        .await
        .unwrap());
    assert_eq!(
        runs::unfinished_of_job(&mut tx, &job_a.id).await.unwrap(),
        runs::Unfinished {
            count: 2,
            queued: 1,
            first: Some(ids[1].clone())
        }
    );
    // Once that one is the only one, the started run is first.
    assert!(runs::cancel_queued(&mut tx, &ids[1], "test").await.unwrap());
    assert_eq!(
        runs::unfinished_of_job(&mut tx, &job_a.id).await.unwrap(),
        runs::Unfinished {
            count: 1,
            queued: 0,
            first: Some(ids[2].clone())
        }
    );
    tx.commit().await.unwrap();
}

async fn lock_rows(s: &Store, id: &str) -> i64 {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM run_locks WHERE run_id = $1")
        .bind(id)
        .fetch_one(&mut s.read().await.unwrap())
        .await
        .unwrap();
    sqlx::Row::try_get(&row, "n").unwrap()
}

async fn a_runs_lock_rows_last_while_it_waits_or_holds_its_slots(pg: bool) {
    let (s, _g) = store(pg).await;
    let mut a = spec("a");
    a.lock_keys = vec!["source".into(), "sink".into()];
    let mut tx = s.begin_write().await.unwrap();
    let job = jobs::insert(&mut tx, NewJob { spec: &a }).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let new = runs::NewRun::queued(&job, &a);
        ids.push(runs::insert(&mut tx, new).await.unwrap().id);
    }
    tx.commit().await.unwrap();
    assert_eq!(
        lock_rows(&s, &ids[0]).await,
        2,
        "a queued run waits for its locks"
    );

    // Cancelled while queued: it needs its locks no more.
    let mut tx = s.begin_write().await.unwrap();
    assert!(runs::cancel_queued(&mut tx, &ids[0], "test").await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(lock_rows(&s, &ids[0]).await, 0);

    // Lost while its container may still run: it keeps them until the container is gone.
    let mut tx = s.begin_write().await.unwrap();
    assert!(
        runs::mark_starting(&mut tx, &ids[1], "me", now_ms() + 30_000)
            .await
            .unwrap()
    );
    let lost = runs::Outcome::default();
    let done = runs::finish(&mut tx, &ids[1], 1, RunStatus::Lost, &lost, false).await;
    assert!(done.unwrap().is_some());
    tx.commit().await.unwrap();
    assert_eq!(lock_rows(&s, &ids[1]).await, 2, "the slots are still held");
    let (held, _) = {
        let mut conn = s.read().await.unwrap();
        locks::lock_usage(&mut conn, "source").await.unwrap()
    };
    assert_eq!(held, 1);
    // A second lost run: both await their container's end, oldest first.
    let mut tx = s.begin_write().await.unwrap();
    assert!(
        runs::mark_starting(&mut tx, &ids[2], "me", now_ms() + 30_000)
            .await
            .unwrap()
    );
    let done = runs::finish(&mut tx, &ids[2], 1, RunStatus::Lost, &lost, false).await;
    assert!(done.unwrap().is_some());
    tx.commit().await.unwrap();
    let fenced = |runs: Vec<runs::RunRow>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let both = fenced(s.fenced().await.unwrap());
    assert_eq!(both, [ids[1].clone(), ids[2].clone()]);
    s.release_slot(&ids[1]).await.unwrap();
    assert_eq!(lock_rows(&s, &ids[1]).await, 0, "released with the slots");
    assert_eq!(lock_rows(&s, &ids[2]).await, 2, "another run's rows stay");
    assert_eq!(fenced(s.fenced().await.unwrap()), [ids[2].clone()]);
}

/// Batches are cut into inserts of a few fixed lengths; whatever a batch's length, every
/// line lands once, numbered on from the last, with its own fields.
async fn batches_of_any_length_are_stored_whole_and_in_order(pg: bool) {
    let (s, _g) = store(pg).await;
    let a = spec("a");
    let mut tx = s.begin_write().await.unwrap();
    let job = jobs::insert(&mut tx, NewJob { spec: &a }).await.unwrap();
    let id = runs::insert(&mut tx, runs::NewRun::queued(&job, &a))
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    let mut n = 0i64;
    for len in [1usize, 3, 255, 256, 257, 700, 2000] {
        let batch: Vec<_> = (0..len)
            .map(|_| {
                n += 1;
                logs::NewLine {
                    attempt: n % 3,
                    ts: 1_000_000 + n,
                    stream: if n % 2 == 0 { "stdout" } else { "stderr" },
                    line: format!("line {n}"),
                }
            })
            .collect();
        s.append_logs(&id, &batch, Default::default())
            .await
            .unwrap();
    }
    let stored = s.logs(&id, 0, 10_000).await.unwrap();
    assert_eq!(stored.len() as i64, n);
    for (i, l) in stored.iter().enumerate() {
        let k = i as i64 + 1;
        assert_eq!(
            (
                l.line_no,
                l.attempt,
                l.ts,
                l.stream.as_str(),
                l.line.as_str()
            ),
            (
                k,
                k % 3,
                1_000_000 + k,
                if k % 2 == 0 { "stdout" } else { "stderr" },
                format!("line {k}").as_str()
            )
        );
    }
    assert_eq!(s.run(&id).await.unwrap().log_lines, n);
}
