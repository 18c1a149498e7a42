//! The store's connections, transactions and SQLite's log, on both databases where both
//! have them: transactions dropped or left open, savepoints, values bound and read back,
//! migrations run again, and the write-ahead log copied back into the database.

use serde_json::json;

use super::super::*;
use super::store;

both!(
    migrations_run_again_without_change,
    a_dropped_transaction_leaves_nothing_and_the_next_writer_begins,
    a_connection_left_inside_a_transaction_is_not_reused,
    a_failed_step_under_a_savepoint_undoes_only_its_own_writes,
    values_come_back_as_they_were_bound,
);

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
    // About 4 MB, past the log's limit: copied back within a second of it. Commits do not
    // copy the log back (how long the writes take decides whether the task already did):
    // whatever the timing, the writes reach the database file within seconds.
    fill_and_wait(1000, 4000, 3_000_000, 10).await;
}

/// A log that stays small is copied back too, at the slower pace: a single small write
/// reaches the database file.
#[tokio::test]
async fn a_small_sqlite_log_is_checkpointed_too() {
    fill_and_wait(1, 20_000, 16_000, 30).await;
}

/// Writes `entries` audit entries of `bytes` each, one transaction each, into a new SQLite
/// store, and waits up to `seconds` for the database file to grow by `growth` bytes. When
/// the writes stay under the log's limit, checks that they do.
async fn fill_and_wait(entries: usize, bytes: usize, growth: u64, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = Store::open_sqlite(&path).await.unwrap();
    // Let the first pass (right after opening) go by.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    let filler = "x".repeat(bytes);
    for i in 0..entries {
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
    if ((entries * bytes) as u64) < sqlite::WAL_LIMIT / 2 {
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        assert!(
            wal < sqlite::WAL_LIMIT,
            "the writes stay under the limit: {wal}"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while size() < before + growth {
        assert!(
            std::time::Instant::now() < deadline,
            "the log was not checkpointed: {} bytes",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
