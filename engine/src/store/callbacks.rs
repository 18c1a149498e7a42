//! Callbacks of runs: the sealed URIs a caller asked to be told of a run's end at, and their
//! rows in the outbox. The store never sees a plain URI.
//!
//! A callback is put in the outbox once, when its run reaches a final status — in the
//! transaction that moves it there — or at once when it is added to a run that has already
//! ended. Both paths lock the run's row first, so a callback added while its run ends is
//! enqueued by exactly one of them.

use serde_json::json;
use sqlx::Row;

use crate::store::Conn;

use super::alerts::outbox;
use super::runs::{self, RunRow};
use super::secrets::SealedSecret;
use super::{now_ms, Dialect, Result, Store, StoreError};

/// What a callback's sealed value is called.
pub const URI: &str = "uri";

/// The outbox event of a callback.
pub const EVENT: &str = "callback";

/// A callback to add to a run.
#[derive(Debug, Clone)]
pub struct NewCallback<'a> {
    /// Its id, which the URI was sealed for.
    pub id: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// SHA-256 of the URI, hex.
    pub uri_digest: &'a str,
    /// Scheme and host, for people.
    pub uri_shown: &'a str,
    /// The engine's address as the caller reached it.
    pub base_url: &'a str,
    /// The URI, sealed.
    pub sealed: &'a SealedSecret,
}

/// A stored callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRow {
    /// Its id.
    pub id: String,
    /// The run.
    pub run_id: String,
    /// Scheme and host.
    pub uri_shown: String,
    /// The engine's address as the caller reached it.
    pub base_url: String,
    /// The URI, sealed.
    pub sealed: SealedSecret,
}

fn decode(r: &sqlx::any::AnyRow) -> Result<CallbackRow> {
    Ok(CallbackRow {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        uri_shown: r.try_get("uri_shown")?,
        base_url: r.try_get("base_url")?,
        sealed: SealedSecret {
            key: URI.into(),
            key_id: r.try_get("key_id")?,
            nonce: r.try_get("nonce")?,
            ciphertext: r.try_get("ciphertext")?,
        },
    })
}

const COLUMNS: &str = "id, run_id, uri_shown, base_url, key_id, nonce, ciphertext";

/// Adds a callback to a run, on the caller's transaction, and enqueues it at once when the
/// run has already ended. Returns false when the run already had this URI (nothing changes).
pub async fn add(conn: &mut Conn, dialect: Dialect, c: &NewCallback<'_>) -> Result<bool> {
    let lock = match dialect {
        Dialect::Postgres => " FOR UPDATE",
        // A write transaction on SQLite already holds the only write lock.
        Dialect::Sqlite => "",
    };
    let status: String = sqlx::query(&format!("SELECT status FROM runs WHERE id = $1{lock}"))
        .bind(c.run_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_get("status")?;
    let added = sqlx::query(
        "INSERT INTO run_callbacks (id, run_id, uri_digest, uri_shown, base_url, key_id, nonce, \
         ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (run_id, uri_digest) DO NOTHING",
    )
    .bind(c.id)
    .bind(c.run_id)
    .bind(c.uri_digest)
    .bind(c.uri_shown)
    .bind(c.base_url)
    .bind(&c.sealed.key_id)
    .bind(&c.sealed.nonce)
    .bind(&c.sealed.ciphertext)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    let ended = status
        .parse::<jobdock_types::RunStatus>()
        .map_err(StoreError::Corrupt)?
        .is_final();
    if added && ended {
        enqueue_for_run(conn, c.run_id).await?;
    }
    Ok(added)
}

/// Puts the callbacks of a run that has just reached its final status in the outbox, on
/// `conn` inside the transaction that moved it there. Like the run's alerts, a failure to
/// put them there is logged and never fails the run's end (a savepoint keeps the
/// transaction usable).
pub async fn enqueue_run_end(conn: &mut Conn, run_id: &str) -> Result<usize> {
    // As for alerts without a channel: one read of the run's callbacks, and no savepoint.
    let any = sqlx::query("SELECT 1 AS x FROM run_callbacks WHERE run_id = $1 LIMIT 1")
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?;
    if any.is_none() {
        return Ok(0);
    }
    put_run_end(conn, run_id).await
}

/// [`enqueue_run_end`] for a caller that knows the run has callbacks (`runs::EndNeeds`).
pub async fn put_run_end(conn: &mut Conn, run_id: &str) -> Result<usize> {
    conn.savepoint().await?;
    match enqueue_for_run(&mut *conn, run_id).await {
        Ok(n) => {
            conn.release_savepoint().await?;
            Ok(n)
        }
        Err(e) => {
            conn.rollback_to_savepoint().await?;
            tracing::error!(run_id, error = %e, "could not enqueue the run's callbacks; the run ends without them");
            Ok(0)
        }
    }
}

/// Puts every callback of a run that has ended and is not yet in the outbox there; how
/// many.
async fn enqueue_for_run(conn: &mut Conn, run_id: &str) -> Result<usize> {
    let ids: Vec<String> = sqlx::query(
        "SELECT c.id FROM run_callbacks c WHERE c.run_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM alert_outbox o WHERE o.callback_id = c.id) ORDER BY c.created_at, c.id",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get("id"))
    .collect::<std::result::Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let run = runs::get(conn, run_id).await?;
    for id in &ids {
        outbox::insert_callback(
            conn,
            id,
            &run.job_name,
            run_id,
            &summary(&run),
            &details(&run),
        )
        .await?;
    }
    Ok(ids.len())
}

fn summary(run: &RunRow) -> String {
    format!(
        "callback for run {} of {} ({})",
        run.id, run.job_name, run.status
    )
}

fn details(run: &RunRow) -> serde_json::Value {
    json!({ "status": run.status.as_str(), "exit_code": run.exit_code })
}

/// One callback, on the caller's connection.
pub async fn get(conn: &mut Conn, id: &str) -> Result<CallbackRow> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM run_callbacks WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    decode(&row)
}

/// Every callback not sealed under `key_id`, for re-sealing under a new master key.
pub async fn not_sealed_with(conn: &mut Conn, key_id: &str) -> Result<Vec<CallbackRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM run_callbacks WHERE key_id <> $1"
    ))
    .bind(key_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

/// Replaces a callback's sealed URI (a key rotation).
pub async fn put_sealed(conn: &mut Conn, id: &str, s: &SealedSecret) -> Result<()> {
    sqlx::query("UPDATE run_callbacks SET key_id = $1, nonce = $2, ciphertext = $3 WHERE id = $4")
        .bind(&s.key_id)
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl Store {
    /// One callback.
    pub async fn callback(&self, id: &str) -> Result<CallbackRow> {
        let mut conn = self.write_alone().await?;
        get(&mut conn, id).await
    }

    /// One callback per master key that sealed any, to check at start that the ring opens
    /// them.
    pub async fn callback_sealing_key_samples(&self) -> Result<Vec<CallbackRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM run_callbacks WHERE id IN \
             (SELECT MIN(id) FROM run_callbacks GROUP BY key_id)"
        ))
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// The callbacks of a run, oldest first.
    pub async fn callbacks_of(&self, run_id: &str) -> Result<Vec<CallbackRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM run_callbacks WHERE run_id = $1 ORDER BY created_at, id"
        ))
        .bind(run_id)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode).collect()
    }
}
