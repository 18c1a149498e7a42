//! The queue as the dispatcher reads it on each pass.

use sqlx::{AnyConnection, Row};

use super::super::{now_ms, Result};

/// A queued run that may start now, as a dispatch pass first sees it: enough to tell
/// whether its job already waits in this pass. The whole run is read only for the runs
/// that may start. A pass looks at up to 2,000 queued runs, nearly all of them behind an
/// earlier run of their job when the queue is long; reading each whole (38 columns and its
/// definition's JSON) cost 41.7 ms of engine CPU per run with 5,000 queued.
#[derive(Debug, Clone)]
pub struct DueRun {
    /// Queue order.
    pub seq: i64,
    /// The run's id.
    pub id: String,
    /// Its job's id.
    pub job_id: String,
    /// Its job's name.
    pub job_name: String,
    /// The attempt it waits to start.
    pub attempt: i64,
    /// The backend it runs on.
    pub backend: String,
}

/// Queued runs due now (not waiting out a retry's backoff) after `after_seq`, oldest first,
/// at most `limit`, on one of `backends`.
pub async fn due(
    conn: &mut AnyConnection,
    backends: &[String],
    after_seq: i64,
    limit: i64,
) -> Result<Vec<DueRun>> {
    let rows = sqlx::query(
        "SELECT seq, id, job_id, job_name, attempt, backend FROM runs \
         WHERE status = 'queued' AND seq > $1 \
         AND (next_attempt_at IS NULL OR next_attempt_at <= $2) ORDER BY seq LIMIT $3",
    )
    .bind(after_seq)
    .bind(now_ms())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut due = Vec::with_capacity(rows.len());
    for r in &rows {
        let backend: String = r.try_get("backend")?;
        if !backends.contains(&backend) {
            continue;
        }
        due.push(DueRun {
            seq: r.try_get("seq")?,
            id: r.try_get("id")?,
            job_id: r.try_get("job_id")?,
            job_name: r.try_get("job_name")?,
            attempt: r.try_get("attempt")?,
            backend,
        });
    }
    Ok(due)
}
