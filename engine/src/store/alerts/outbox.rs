//! The alert outbox: one row per alert and channel, or per callback of a run, kept until
//! delivered or given up, and the attempts at delivering it.
//!
//! A replica sends a row only while it holds the row's lease. Taking the lease is one
//! compare-and-set statement — it succeeds only for a row that is pending, due, and not
//! leased to anyone (or whose lease ran out) — so two replicas never take the same row; on
//! PostgreSQL `SKIP LOCKED` also keeps concurrent claimers from waiting on each other. A
//! replica that dies mid-send leaves its rows to be taken again once their leases run out:
//! delivery is at least once, and receivers dedupe on the alert's id.

use jobdock_types::{ChannelKind, DeliveryStatus};
use sqlx::Row;

use crate::store::Conn;

use crate::store::{now_ms, Dialect, Result, Store, StoreError};

/// An alert to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    /// The channel's id.
    pub channel_id: &'a str,
    /// An [`AlertKind`](super::AlertKind) as text, or `test`.
    pub event: &'a str,
    /// The job.
    pub job: Option<&'a str>,
    /// The run.
    pub run_id: Option<&'a str>,
    /// When it happened, Unix ms.
    pub occurred_at: i64,
    /// In words.
    pub summary: &'a str,
    /// For machines.
    pub details: &'a serde_json::Value,
    /// When the first attempt is due, Unix ms.
    pub due_at: i64,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Paging position.
    pub seq: i64,
    /// The alert's id (`X-Jobdock-Delivery`).
    pub id: String,
    /// The channel's id, for an alert.
    pub channel_id: Option<String>,
    /// The callback's id, for a callback (see `store::callbacks`).
    pub callback_id: Option<String>,
    /// The event.
    pub event: String,
    /// The job.
    pub job_name: Option<String>,
    /// The run.
    pub run_id: Option<String>,
    /// Unix ms.
    pub occurred_at: i64,
    /// In words.
    pub summary: String,
    /// For machines.
    pub details: serde_json::Value,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// Unix ms, while pending.
    pub next_attempt_at: Option<i64>,
    /// The replica holding its lease.
    pub claimed_by: Option<String>,
    /// Unix ms.
    pub claimed_until: Option<i64>,
    /// Unix ms.
    pub delivered_at: Option<i64>,
}

/// A stored attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// The alert's id.
    pub outbox_id: String,
    /// From 1.
    pub attempt: i64,
    /// Unix ms.
    pub at: i64,
    /// The receiver's status, when it answered.
    pub http_status: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// When it was made, Unix ms.
    pub at: i64,
    /// The receiver's status, when it answered.
    pub http_status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

/// What becomes of the alert after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The receiver took it.
    Delivered,
    /// Try again at this Unix ms.
    RetryAt(i64),
    /// Give up.
    Failed,
}

const COLUMNS: &str =
    "seq, id, channel_id, callback_id, event, job_name, run_id, occurred_at, summary, \
    details, status, attempts, next_attempt_at, claimed_by, claimed_until, delivered_at";

fn decode(r: &sqlx::any::AnyRow) -> Result<OutboxRow> {
    let details: String = r.try_get("details")?;
    let status: String = r.try_get("status")?;
    Ok(OutboxRow {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        channel_id: r.try_get("channel_id")?,
        callback_id: r.try_get("callback_id")?,
        event: r.try_get("event")?,
        job_name: r.try_get("job_name")?,
        run_id: r.try_get("run_id")?,
        occurred_at: r.try_get("occurred_at")?,
        summary: r.try_get("summary")?,
        details: serde_json::from_str(&details)
            .map_err(|e| StoreError::Corrupt(format!("alert details: {e}")))?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        claimed_by: r.try_get("claimed_by")?,
        claimed_until: r.try_get("claimed_until")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// Puts one alert in the outbox, on the caller's connection; its id.
pub async fn insert(conn: &mut Conn, a: &NewAlert<'_>) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO alert_outbox (id, channel_id, event, job_name, run_id, occurred_at, summary, \
         details, status, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10)",
    )
    .bind(&id)
    .bind(a.channel_id)
    .bind(a.event)
    .bind(a.job)
    .bind(a.run_id)
    .bind(a.occurred_at)
    .bind(a.summary)
    .bind(a.details.to_string())
    .bind(a.due_at)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Puts the callback `callback_id` of a run that has ended in the outbox, due at once, on
/// the caller's connection; its id.
pub async fn insert_callback(
    conn: &mut Conn,
    callback_id: &str,
    job: &str,
    run_id: &str,
    summary: &str,
    details: &serde_json::Value,
) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO alert_outbox (id, callback_id, event, job_name, run_id, occurred_at, summary, \
         details, status, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $6, $6)",
    )
    .bind(&id)
    .bind(callback_id)
    .bind(crate::store::callbacks::EVENT)
    .bind(job)
    .bind(run_id)
    .bind(now)
    .bind(summary)
    .bind(details.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Where a claimed outbox row goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A notification channel.
    Channel {
        /// The channel's name.
        name: String,
        /// The channel's kind.
        kind: ChannelKind,
    },
    /// A run's callback.
    Callback,
}

/// A claimed outbox row with what sending it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The alert or callback.
    pub alert: OutboxRow,
    /// Where it goes.
    pub target: Target,
}

impl Store {
    /// Takes the lease of up to `limit` due alerts for `owner` until `lease_until` (Unix ms),
    /// oldest due first. A row is taken only if nobody holds a live lease on it, in the same
    /// statement that takes it.
    pub async fn claim_alerts(
        &self,
        owner: &str,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>> {
        let skip_locked = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let free = "status = 'pending' AND (claimed_until IS NULL OR claimed_until < $3)";
        let now = now_ms();
        // Most passes find nothing due: a read then, which on SQLite takes no write lock
        // and leaves the writers' queue alone, instead of an UPDATE every second.
        let due = sqlx::query(&format!(
            "SELECT 1 AS x FROM alert_outbox WHERE {} AND next_attempt_at <= $1 LIMIT 1",
            free.replace("$3", "$1")
        ))
        .bind(now)
        .fetch_optional(&mut self.read().await?)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "UPDATE alert_outbox SET claimed_by = $1, claimed_until = $2 \
             WHERE id IN (SELECT id FROM alert_outbox WHERE {free} AND next_attempt_at <= $3 \
                          ORDER BY next_attempt_at, seq LIMIT $4{skip_locked}) \
             AND {free} RETURNING {COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut self.write_alone().await?)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let alert = decode(r)?;
            let Some(channel_id) = &alert.channel_id else {
                claimed.push(Claimed {
                    alert,
                    target: Target::Callback,
                });
                continue;
            };
            let ch = sqlx::query("SELECT name, kind FROM alert_channels WHERE id = $1")
                .bind(channel_id)
                .fetch_optional(&mut self.read().await?)
                .await?;
            // A channel deleted meanwhile takes its alerts with it.
            let Some(ch) = ch else { continue };
            let kind: String = ch.try_get("kind")?;
            claimed.push(Claimed {
                target: Target::Channel {
                    name: ch.try_get("name")?,
                    kind: kind.parse().map_err(StoreError::Corrupt)?,
                },
                alert,
            });
        }
        claimed.sort_by_key(|c| c.alert.seq);
        Ok(claimed)
    }

    /// Records an attempt at an alert `owner` holds the lease of, and what becomes of the
    /// alert, in one transaction. The attempt is always recorded (it happened); the alert
    /// changes only if `owner` still holds its lease. Returns whether it did.
    pub async fn record_alert_attempt(
        &self,
        alert_id: &str,
        owner: &str,
        attempt: &AttemptResult,
        next: Next,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let number: i64 = sqlx::query("SELECT attempts FROM alert_outbox WHERE id = $1")
            .bind(alert_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>("attempts"))
            .transpose()?
            .ok_or(StoreError::NotFound)?
            + 1;
        sqlx::query(
            "INSERT INTO alert_attempts (outbox_id, attempt, at, http_status, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(alert_id)
        .bind(number)
        .bind(attempt.at)
        .bind(attempt.http_status.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await?;
        let (status, next_at, delivered_at) = match next {
            Next::Delivered => (DeliveryStatus::Delivered, None, Some(attempt.at)),
            Next::RetryAt(t) => (DeliveryStatus::Pending, Some(t), None),
            Next::Failed => (DeliveryStatus::Failed, None, None),
        };
        let done = sqlx::query(
            "UPDATE alert_outbox SET status = $1, attempts = attempts + 1, next_attempt_at = $2, \
             delivered_at = $3, claimed_by = NULL, claimed_until = NULL \
             WHERE id = $4 AND claimed_by = $5 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(next_at)
        .bind(delivered_at)
        .bind(alert_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// A channel's alerts, newest first, before position `before_seq`.
    pub async fn deliveries(
        &self,
        channel_id: &str,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM alert_outbox WHERE channel_id = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        ))
        .bind(channel_id)
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// The attempts at these alerts, oldest first.
    pub async fn delivery_attempts(&self, alert_ids: &[String]) -> Result<Vec<AttemptRow>> {
        if alert_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT outbox_id, attempt, at, http_status, error, duration_ms FROM alert_attempts \
             WHERE outbox_id IN ({}) ORDER BY seq",
            crate::store::placeholders(alert_ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in alert_ids {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&mut self.read().await?).await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    outbox_id: r.try_get("outbox_id")?,
                    attempt: r.try_get("attempt")?,
                    at: r.try_get("at")?,
                    http_status: r.try_get("http_status")?,
                    error: r.try_get("error")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    /// Frees every alert claim. Only for a single engine (SQLite) at start, when every claim
    /// is its own from before a restart.
    pub async fn release_alert_claims(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE alert_outbox SET claimed_by = NULL, claimed_until = NULL \
             WHERE status = 'pending' AND claimed_by IS NOT NULL",
        )
        .execute(&mut self.write_alone().await?)
        .await?;
        Ok(done.rows_affected())
    }

    /// One alert.
    pub async fn alert(&self, id: &str) -> Result<OutboxRow> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM alert_outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?
            .ok_or(StoreError::NotFound)?;
        decode(&row)
    }
}

/// Deletes up to `limit` alerts that were delivered or given up and happened before
/// `before_ms`, with their attempts; returns how many went. Pending alerts always stay.
pub async fn prune(conn: &mut Conn, before_ms: i64, limit: i64) -> Result<u64> {
    sqlx::query(
        "DELETE FROM alert_attempts WHERE outbox_id IN (SELECT id FROM alert_outbox \
         WHERE status IN ('delivered', 'failed') AND occurred_at < $1 ORDER BY seq LIMIT $2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(
        "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox \
         WHERE status IN ('delivered', 'failed') AND occurred_at < $1 ORDER BY seq LIMIT $2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
