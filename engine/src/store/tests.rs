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
    migrations_run_again_without_change,
    a_dropped_transaction_leaves_nothing_and_the_next_writer_begins,
    a_connection_left_inside_a_transaction_is_not_reused,
    a_failed_step_under_a_savepoint_undoes_only_its_own_writes,
    values_come_back_as_they_were_bound,
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

async fn migrations_run_again_without_change(pg: bool) {
    let (s, g) = store(pg).await;
    let again = reopen(&s, &g).await;
    again.ping().await.unwrap();
    s.ping().await.unwrap();
}

/// A second store on the database of `s` (opening it runs the migrations again).
async fn reopen(s: &Store, guard: &Box<dyn std::any::Any>) -> Store {
    match (&s.listen_url, guard.downcast_ref::<tempfile::TempDir>()) {
        (Some(url), _) => Store::connect(secrecy::ExposeSecret::expose_secret(&**url))
            .await
            .unwrap(),
        (None, Some(dir)) => Store::open_sqlite(&dir.path().join("t.db")).await.unwrap(),
        (None, None) => unreachable!("a SQLite store lives in a temporary directory"),
    }
}

async fn count(s: &Store, like: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM settings WHERE key LIKE $1")
        .bind(like)
        .fetch_one(&mut s.read().await.unwrap())
        .await
        .unwrap()
}

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

/// A write transaction whose task is cancelled in the middle of it (an HTTP request whose
/// client went away) is rolled back: the write transactions after it begin at once, and
/// what it wrote is nowhere, seen from another store on the same database.
async fn a_dropped_transaction_leaves_nothing_and_the_next_writer_begins(pg: bool) {
    let (s, g) = store(pg).await;
    let (began, wait) = tokio::sync::oneshot::channel();
    let task = tokio::spawn({
        let s = s.clone();
        async move {
            let mut tx = s.begin_write().await.unwrap();
            sqlx::query("INSERT INTO settings (key, value) VALUES ('forgotten', 'x')")
                .execute(&mut *tx)
                .await
                .unwrap();
            began.send(()).unwrap();
            std::future::pending::<()>().await;
            tx.commit().await.unwrap();
        }
    });
    wait.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    for i in 0..20 {
        let mut tx = tokio::time::timeout(std::time::Duration::from_secs(10), s.begin_write())
            .await
            .expect("a write transaction begins, not stalled behind the dropped one")
            .unwrap();
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, 'v')")
            .bind(format!("k{i}"))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let other = reopen(&s, &g).await;
    assert_eq!(count(&other, "k%").await, 20);
    assert_eq!(count(&other, "forgotten").await, 0);
    assert_eq!(count(&s, "forgotten").await, 0);
}

/// A connection that comes back to its pool inside a transaction nothing will end is not
/// handed out so again. On PostgreSQL that happens when a task is cancelled between sqlx's
/// `BEGIN` and the transaction that would end it (here: that transaction is forgotten), and
/// the connection is closed; on SQLite a transaction begins where it is asked for, and a
/// connection found inside one (a `BEGIN` run by hand) is rolled back when next taken.
async fn a_connection_left_inside_a_transaction_is_not_reused(pg: bool) {
    let (s, _g) = store(pg).await;
    {
        let mut conn = s.read().await.unwrap();
        match conn.as_postgres() {
            Some(pg) => std::mem::forget(sqlx::Connection::begin(pg).await.unwrap()),
            None => {
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            }
        }
        sqlx::query("SELECT COUNT(*) FROM settings")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    }
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let mut conn = s.read().await.unwrap();
        let inside = match s.dialect() {
            // PostgreSQL takes a savepoint only inside a transaction.
            Dialect::Postgres => sqlx::query("SAVEPOINT probe")
                .execute(&mut conn)
                .await
                .is_ok(),
            // SQLite refuses a transaction inside another.
            Dialect::Sqlite => {
                let refused = sqlx::query("BEGIN").execute(&mut conn).await.is_err();
                if !refused {
                    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                }
                refused
            }
        };
        assert!(!inside, "a connection was handed out inside a transaction");
    }
}

/// A step under a savepoint that fails (here a unique violation) is undone alone: the
/// transaction's writes before it stay, and so do those after it.
async fn a_failed_step_under_a_savepoint_undoes_only_its_own_writes(pg: bool) {
    let (s, _g) = store(pg).await;
    let insert = |key: &'static str| {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, 'v')").bind(key)
    };
    let mut tx = s.begin_write().await.unwrap();
    insert("before").execute(&mut *tx).await.unwrap();
    tx.savepoint().await.unwrap();
    insert("inside").execute(&mut *tx).await.unwrap();
    let clash = insert("before").execute(&mut *tx).await.unwrap_err();
    assert!(matches!(
        StoreError::on_unique(clash, "setting"),
        StoreError::Conflict("setting")
    ));
    tx.rollback_to_savepoint().await.unwrap();
    insert("after").execute(&mut *tx).await.unwrap();
    tx.savepoint().await.unwrap();
    insert("kept").execute(&mut *tx).await.unwrap();
    tx.release_savepoint().await.unwrap();
    tx.commit().await.unwrap();
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM settings ORDER BY key")
        .fetch_all(&mut s.read().await.unwrap())
        .await
        .unwrap();
    let ours: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| ["before", "inside", "after", "kept"].contains(k))
        .collect();
    assert_eq!(ours, ["after", "before", "kept"]);
}

/// What a statement is given comes back the same: integers at their limits, reals, text
/// (with a tab and non-ASCII), bytes and NULLs; parameters may come in any order
/// and more than once; an `UPDATE` counts the rows it changed.
async fn values_come_back_as_they_were_bound(pg: bool) {
    let (s, _g) = store(pg).await;
    let cast = match s.dialect() {
        Dialect::Postgres => [
            "$2::BIGINT",
            "$1::DOUBLE PRECISION",
            "$3::TEXT",
            "$4::BYTEA",
            "$5::BIGINT",
        ],
        Dialect::Sqlite => ["$2", "$1", "$3", "$4", "$5"],
    };
    let sql = format!(
        "SELECT {} AS big, {} AS real, {} AS text, {} AS bytes, {} AS none, \
         {} + 1 AS again",
        cast[0], cast[1], cast[2], cast[3], cast[4], cast[0]
    );
    for big in [i64::MIN, -1, 0, i64::MAX - 1] {
        let row = sqlx::query(&sql)
            .bind(0.25_f64)
            .bind(big)
            .bind("a\tb – ü")
            .bind(vec![0_u8, 255, 7])
            .bind(None::<i64>)
            .fetch_one(&mut s.read().await.unwrap())
            .await
            .unwrap();
        use sqlx::Row as _;
        assert_eq!(row.try_get::<i64, _>("big").unwrap(), big);
        assert_eq!(row.try_get::<i64, _>("again").unwrap(), big + 1);
        assert_eq!(row.try_get::<f64, _>("real").unwrap(), 0.25);
        assert_eq!(row.try_get::<String, _>("text").unwrap(), "a\tb – ü");
        assert_eq!(row.try_get::<Vec<u8>, _>("bytes").unwrap(), [0, 255, 7]);
        assert_eq!(row.try_get::<Option<i64>, _>("none").unwrap(), None);
        assert!(row.try_get::<String, _>("missing").is_err());
    }
    let mut w = s.write_alone().await.unwrap();
    for key in ["x", "y", "z"] {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, 'old')")
            .bind(key)
            .execute(&mut w)
            .await
            .unwrap();
    }
    let changed = sqlx::query("UPDATE settings SET value = $1 WHERE key IN ($2, $3)")
        .bind("new")
        .bind("x")
        .bind("z")
        .execute(&mut w)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 2);
}

/// What a trigger learns of its job's unfinished runs: how many, how many queued, the oldest;
/// ended runs and other jobs' runs do not count.
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
    s.release_slot(&ids[1]).await.unwrap();
    assert_eq!(lock_rows(&s, &ids[1]).await, 0, "released with the slots");
    assert_eq!(lock_rows(&s, &ids[2]).await, 2, "another run's rows stay");
}

/// The SQLite store's connections share one database: an in-memory one is refused with a
/// message that says so, not opened as several databases.
#[tokio::test]
async fn an_in_memory_sqlite_store_is_refused() {
    let e = Store::connect("sqlite::memory:").await.unwrap_err();
    assert!(e.to_string().contains("database error"), "{e}");
    let StoreError::Database(sqlx::Error::Configuration(why)) = e else {
        panic!("not a configuration error: {e:?}");
    };
    assert!(why.to_string().contains("needs a file"), "{why}");
}

/// Commits leave SQLite's write-ahead log alone (`wal_autocheckpoint = 0`); the store's own
/// task copies it back into the database file, so the log does not grow without end.
#[tokio::test]
async fn sqlite_log_is_checkpointed_beside_the_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = Store::open_sqlite(&path).await.unwrap();
    // Let the first pass (right after opening) go by, then write about 4 MB.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    let filler = "x".repeat(4000);
    for i in 0..1000 {
        let mut tx = s.begin_write().await.unwrap();
        let entry = NewAuditEntry {
            token_id: None,
            token_name: Some("test"),
            action: "test.fill",
            target: &format!("t{i}"),
            detail: json!({ "filler": filler }),
            request_id: None,
        };
        audit::record(&mut tx, entry).await.unwrap();
        tx.commit().await.unwrap();
    }
    // Commits do not copy the log back (how long the loop took decides whether the task
    // already did): whatever the timing, the writes reach the database file within seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() < before + 3_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log was not checkpointed: {} bytes",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A log that stays small is copied back too, at the slower pace: a single small write
/// reaches the database file.
#[tokio::test]
async fn a_small_sqlite_log_is_checkpointed_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = Store::open_sqlite(&path).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    let mut tx = s.begin_write().await.unwrap();
    let entry = NewAuditEntry {
        token_id: None,
        token_name: Some("test"),
        action: "test.fill",
        target: "t",
        detail: json!({ "filler": "x".repeat(20_000) }),
        request_id: None,
    };
    audit::record(&mut tx, entry).await.unwrap();
    tx.commit().await.unwrap();
    let wal = std::fs::metadata(dir.path().join("t.db-wal"))
        .unwrap()
        .len();
    assert!(
        wal < sqlite::WAL_LIMIT,
        "the write stays under the limit: {wal}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while size() < before + 16_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the small log was not checkpointed: {} bytes",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
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
