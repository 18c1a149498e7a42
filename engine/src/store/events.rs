//! Run timelines: one row per thing that happened to a run, written in the transaction of
//! the change it records, so that the timeline and the run never disagree.

use jobdock_types::{RunEvent, RunEventKind};
use sqlx::Row;

use crate::store::Conn;

use super::{from_ms, now_ms, Result, Store, StoreError};

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// The run.
    pub run_id: &'a str,
    /// Its attempt.
    pub attempt: i64,
    /// What happened.
    pub kind: RunEventKind,
    /// In words.
    pub message: String,
    /// Facts for machines; `Null` for none.
    pub detail: serde_json::Value,
}

impl<'a> NewEvent<'a> {
    /// An event without detail.
    pub fn new(run_id: &'a str, attempt: i64, kind: RunEventKind, message: String) -> Self {
        Self {
            run_id,
            attempt,
            kind,
            message,
            detail: serde_json::Value::Null,
        }
    }

    /// With `detail`.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Records one event, now.
pub async fn record(conn: &mut Conn, e: NewEvent<'_>) -> Result<()> {
    let detail = (!e.detail.is_null()).then(|| e.detail.to_string());
    sqlx::query(
        "INSERT INTO run_events (run_id, attempt, at, kind, message, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.run_id)
    .bind(e.attempt)
    .bind(now_ms())
    .bind(e.kind.as_str())
    .bind(&e.message)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Notes what a queued run waits for; records a `waiting` event only when the reason
/// changed (the dispatcher asks on every pass).
pub async fn note_waiting(conn: &mut Conn, run_id: &str, attempt: i64, reason: &str) -> Result<()> {
    let changed = sqlx::query(
        "UPDATE runs SET waiting_for = $1 WHERE id = $2 AND status = 'queued' \
         AND (waiting_for IS NULL OR waiting_for <> $1)",
    )
    .bind(reason)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    if changed.rows_affected() > 0 {
        let e = NewEvent::new(run_id, attempt, RunEventKind::Waiting, reason.to_owned());
        record(conn, e).await?;
    }
    Ok(())
}

impl Store {
    /// A run's timeline, oldest first.
    pub async fn events(&self, run_id: &str) -> Result<Vec<RunEvent>> {
        self.events_after(run_id, None, i64::MAX).await
    }

    /// At most `limit` of a run's events after the one with id `after`, oldest first.
    pub async fn events_after(
        &self,
        run_id: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunEvent>> {
        let rows = sqlx::query(
            "SELECT id, attempt, at, kind, message, detail FROM run_events \
             WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(run_id)
        .bind(after.unwrap_or(i64::MIN))
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let detail: Option<String> = r.try_get("detail")?;
                Ok(RunEvent {
                    id: r.try_get("id")?,
                    at: from_ms(r.try_get("at")?),
                    attempt: r.try_get("attempt")?,
                    kind: kind.parse().map_err(StoreError::Corrupt)?,
                    message: r.try_get("message")?,
                    detail: detail
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    /// Records one event in a transaction of its own.
    pub async fn record_event(&self, e: NewEvent<'_>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        record(&mut tx, e).await?;
        tx.commit().await?;
        Ok(())
    }
}
