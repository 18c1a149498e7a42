//! Anomalies raised on runs, and the history the rules learn "usual" from. Raising is
//! idempotent — one anomaly of a kind per run, enforced by a unique index — so replicas
//! checking the same run at once raise it once, and only the one whose insert landed
//! records the event (and, with it, the alerts).

use jobdock_types::{Anomaly, AnomalyKind, RunEventKind};
use sqlx::Row;

use crate::store::Conn;

use super::alerts::{AlertEvent, AlertKind};
use super::events::{self, NewEvent};
use super::{from_ms, now_ms, Dialect, Result, Store, StoreError};

/// An anomaly to raise.
#[derive(Debug, Clone)]
pub struct NewAnomaly<'a> {
    /// The run.
    pub run_id: &'a str,
    /// Its current attempt.
    pub attempt: i64,
    /// Its job.
    pub job: &'a str,
    /// What.
    pub kind: AnomalyKind,
    /// Expected against observed, in words.
    pub message: String,
    /// Expected value.
    pub expected: Option<f64>,
    /// Observed value.
    pub observed: Option<f64>,
}

const COLUMNS: &str =
    "id, run_id, job_name, kind, raised_at, message, expected, observed, closed_at, closed_reason";

fn decode(r: &sqlx::any::AnyRow) -> Result<Anomaly> {
    let kind: String = r.try_get("kind")?;
    let closed_at: Option<i64> = r.try_get("closed_at")?;
    Ok(Anomaly {
        id: r.try_get("id")?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        run_id: r.try_get("run_id")?,
        job: r.try_get("job_name")?,
        raised_at: from_ms(r.try_get("raised_at")?),
        message: r.try_get("message")?,
        expected: r.try_get("expected")?,
        observed: r.try_get("observed")?,
        open: closed_at.is_none(),
        closed_at: closed_at.map(from_ms),
        closed_reason: r.try_get("closed_reason")?,
    })
}

/// Raises an anomaly unless the run already has one of its kind; `Some` when this call
/// raised it (its event is recorded in the same transaction).
pub async fn raise(conn: &mut Conn, a: NewAnomaly<'_>) -> Result<Option<Anomaly>> {
    let inserted = sqlx::query(
        "INSERT INTO anomalies (run_id, job_name, kind, raised_at, message, expected, observed) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, kind) DO NOTHING",
    )
    .bind(a.run_id)
    .bind(a.job)
    .bind(a.kind.as_str())
    .bind(now_ms())
    .bind(&a.message)
    .bind(a.expected)
    .bind(a.observed)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM anomalies WHERE run_id = $1 AND kind = $2"
    ))
    .bind(a.run_id)
    .bind(a.kind.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let anomaly = decode(&row)?;
    let event = NewEvent::new(
        a.run_id,
        a.attempt,
        RunEventKind::Anomaly,
        format!("{}: {}", a.kind, a.message),
    )
    .detail(serde_json::json!({ "kind": a.kind.as_str(), "anomaly_id": anomaly.id }));
    events::record(conn, event).await?;
    let alert = AlertEvent {
        kind: AlertKind::Anomaly,
        job: a.job.to_owned(),
        run_id: a.run_id.to_owned(),
        occurred_at_ms: anomaly.raised_at.timestamp_millis(),
        summary: format!(
            "{} on run {} of {}: {}",
            a.kind, a.run_id, a.job, anomaly.message
        ),
        details: serde_json::json!({
            "anomaly_id": anomaly.id,
            "anomaly": a.kind.as_str(),
            "message": anomaly.message,
            "expected": anomaly.expected,
            "observed": anomaly.observed,
        }),
    };
    super::alerts::enqueue_alerts(conn, &alert).await?;
    Ok(Some(anomaly))
}

/// Closes the run's open run-time anomalies (long_running, slow_start, stalled): they
/// called for attention while it went on.
pub async fn close_for_run(conn: &mut Conn, run_id: &str, reason: &str) -> Result<()> {
    sqlx::query(
        "UPDATE anomalies SET closed_at = $1, closed_reason = $2 WHERE run_id = $3 \
         AND closed_at IS NULL AND kind IN ('long_running', 'slow_start', 'stalled')",
    )
    .bind(now_ms())
    .bind(reason)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Closes the job's open end-of-run anomalies of other runs (`unusually_fast`,
/// `oom_killed`, `timed_out`, `failure_streak`): a clean success settles them. Those of runs
/// still going stay open until their own run ends.
pub async fn close_for_job(
    conn: &mut Conn,
    job: &str,
    except_run: &str,
    reason: &str,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE anomalies SET closed_at = $1, closed_reason = $2 WHERE job_name = $3 \
         AND run_id <> $4 AND closed_at IS NULL \
         AND kind NOT IN ('long_running', 'slow_start', 'stalled')",
    )
    .bind(now_ms())
    .bind(reason)
    .bind(job)
    .bind(except_run)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The durations and trigger→running latencies (ms) of the job's last `limit` successful
/// runs, newest first, leaving out `except_run`. Read from the run statistics, which
/// outlive pruned runs.
pub async fn recent_successes(
    conn: &mut Conn,
    job: &str,
    except_run: &str,
    limit: i64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let stats = super::stats::recent_successes(conn, job, limit + 1).await?;
    let mine = stats
        .iter()
        .filter(|s| s.run_id != except_run)
        .take(limit as usize);
    let (mut took, mut latency) = (Vec::new(), Vec::new());
    for s in mine {
        took.extend(s.duration_ms.map(|d| d.max(0)));
        latency.extend(s.start_latency_ms.map(|l| l.max(0)));
    }
    Ok((took, latency))
}

/// How many of the job's latest finished runs in a row did not succeed (cancelled and
/// skipped runs do not count either way), looking back at most `limit` runs.
pub async fn failures_in_a_row(conn: &mut Conn, job: &str, limit: i64) -> Result<i64> {
    let rows = sqlx::query(
        "SELECT status FROM runs WHERE job_name = $1 \
         AND status IN ('succeeded', 'failed', 'timed_out', 'lost') \
         ORDER BY finished_at DESC, seq DESC LIMIT $2",
    )
    .bind(job)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut n = 0;
    for r in &rows {
        if r.try_get::<String, _>("status")? == "succeeded" {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// Which anomalies to list.
#[derive(Debug, Clone, Default)]
pub struct AnomalyFilter<'a> {
    /// Only open (`Some(true)`) or closed (`Some(false)`) ones.
    pub open: Option<bool>,
    /// Only of this job.
    pub job: Option<&'a str>,
    /// Only of this kind.
    pub kind: Option<AnomalyKind>,
    /// Only older than this id (the cursor).
    pub before_id: Option<i64>,
}

/// A queued, starting or running run, as the periodic check sees it.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    /// Its id.
    pub id: String,
    /// Its place in the queue.
    pub seq: i64,
    /// Its current attempt.
    pub attempt: i64,
    /// Its job's id.
    pub job_id: String,
    /// Its job.
    pub job: String,
    /// Where it stands.
    pub status: jobdock_types::RunStatus,
    /// When it was triggered (ms).
    pub created_at: i64,
    /// When its current attempt's container started (ms).
    pub started_at: Option<i64>,
    /// When its output last moved (ms).
    pub last_output_at: Option<i64>,
}

const ACTIVE_COLUMNS: &str =
    "seq, id, attempt, job_id, job_name, status, created_at, started_at, last_output_at";

fn active_run(r: &sqlx::any::AnyRow) -> Result<ActiveRun> {
    let status: String = r.try_get("status")?;
    Ok(ActiveRun {
        id: r.try_get("id")?,
        seq: r.try_get("seq")?,
        attempt: r.try_get("attempt")?,
        job_id: r.try_get("job_id")?,
        job: r.try_get("job_name")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        last_output_at: r.try_get("last_output_at")?,
    })
}

impl Store {
    /// The first queued first attempt of each job: what the periodic check reads of the
    /// queue on every pass (a later run of a job was triggered after its first and has
    /// waited less; see [`Store::queued_waiting_since`]). Reading every queued run instead
    /// cost a row per run of the queue every two seconds, 5,000 with 5,000 queued. Each
    /// job's first is a probe of the queue's index by job, as in `runs::heads` (PostgreSQL
    /// through `LATERAL`).
    pub async fn first_queued_runs(&self) -> Result<Vec<ActiveRun>> {
        let first = "f.job_id = j.id AND f.status = 'queued' AND f.attempt = 1 \
                     ORDER BY f.seq LIMIT 1";
        let sql = match self.dialect {
            Dialect::Sqlite => {
                let columns: Vec<String> = ACTIVE_COLUMNS
                    .split(", ")
                    .map(|c| format!("r.{c}"))
                    .collect();
                format!(
                    "SELECT {} FROM (SELECT (SELECT f.seq FROM runs f WHERE {first}) AS first_seq \
                     FROM jobs j) h JOIN runs r ON r.seq = h.first_seq ORDER BY r.seq",
                    columns.join(", ")
                )
            }
            Dialect::Postgres => format!(
                "SELECT r.* FROM jobs j \
                 CROSS JOIN LATERAL (SELECT {ACTIVE_COLUMNS} FROM runs f WHERE {first}) r \
                 ORDER BY r.seq"
            ),
        };
        let rows = sqlx::query(&sql).fetch_all(&mut self.read().await?).await?;
        rows.iter().map(active_run).collect()
    }

    /// When run `id`'s output last moved (ms), if it has.
    pub async fn last_output_at(&self, id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT last_output_at FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("last_output_at")?,
            None => None,
        })
    }

    /// The queued first attempts of job `job_id` after `after_seq` in the queue that were
    /// triggered at `triggered_by` or before, in queue order, at most `limit`: the runs
    /// behind a job's first queued run that have waited too long as well.
    pub async fn queued_waiting_since(
        &self,
        job_id: &str,
        after_seq: i64,
        triggered_by: i64,
        limit: i64,
    ) -> Result<Vec<ActiveRun>> {
        let rows = sqlx::query(&format!(
            "SELECT {ACTIVE_COLUMNS} FROM runs WHERE job_id = $1 AND status = 'queued' \
             AND seq > $2 AND attempt = 1 AND created_at <= $3 ORDER BY seq LIMIT $4"
        ))
        .bind(job_id)
        .bind(after_seq)
        .bind(triggered_by)
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(active_run).collect()
    }

    /// The monitoring settings and expected duration of runs `ids` (from their definitions,
    /// which do not change while a run lasts), in one statement.
    pub async fn monitoring_of(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(String, jobdock_types::Monitoring, Option<i64>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, spec FROM runs WHERE id IN ({})",
            crate::store::placeholders(ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&mut self.read().await?).await?;
        rows.iter()
            .map(|r| {
                let spec: String = r.try_get("spec")?;
                let spec: jobdock_types::JobSpec =
                    serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((
                    r.try_get("id")?,
                    spec.monitoring.unwrap_or_default(),
                    spec.expected_duration_seconds,
                ))
            })
            .collect()
    }

    /// [`recent_successes`] outside a transaction.
    pub async fn recent_successes(&self, job: &str, limit: i64) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut conn = self.read().await?;
        recent_successes(&mut conn, job, "", limit).await
    }

    /// Whether the run has an anomaly of this kind already.
    pub async fn has_anomaly(&self, run_id: &str, kind: AnomalyKind) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS x FROM anomalies WHERE run_id = $1 AND kind = $2")
            .bind(run_id)
            .bind(kind.as_str())
            .fetch_optional(&mut self.read().await?)
            .await?;
        Ok(row.is_some())
    }

    /// Raises an anomaly in a transaction of its own; see [`raise`].
    pub async fn raise_anomaly(&self, a: NewAnomaly<'_>) -> Result<Option<Anomaly>> {
        let mut tx = self.begin_write().await?;
        let raised = raise(&mut tx, a).await?;
        tx.commit().await?;
        Ok(raised)
    }

    /// Anomalies newest first.
    pub async fn anomalies(&self, f: AnomalyFilter<'_>, limit: i64) -> Result<Vec<Anomaly>> {
        let open = f.open.map(i64::from);
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM anomalies WHERE id < $1 AND ($2 IS NULL OR job_name = $2) \
             AND ($3 IS NULL OR kind = $3) \
             AND ($4 IS NULL OR ($4 = 1 AND closed_at IS NULL) OR ($4 = 0 AND closed_at IS NOT NULL)) \
             ORDER BY id DESC LIMIT $5"
        ))
        .bind(f.before_id.unwrap_or(i64::MAX))
        .bind(f.job)
        .bind(f.kind.map(|k| k.as_str()))
        .bind(open)
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// The anomalies of some runs, oldest first.
    pub async fn anomalies_of_runs(&self, run_ids: &[&str]) -> Result<Vec<Anomaly>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM anomalies WHERE run_id IN ({}) ORDER BY id",
            crate::store::placeholders(run_ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in run_ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&mut self.read().await?).await?;
        rows.iter().map(decode).collect()
    }

    /// One anomaly.
    pub async fn anomaly(&self, id: i64) -> Result<Option<Anomaly>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM anomalies WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Closes an anomaly by hand, recording `audit` with it; `None` when there is no such
    /// anomaly. Closing a closed one changes nothing.
    pub async fn close_anomaly(
        &self,
        id: i64,
        reason: &str,
        audit: super::NewAuditEntry<'_>,
    ) -> Result<Option<Anomaly>> {
        let mut tx = self.begin_write().await?;
        let closed = sqlx::query(
            "UPDATE anomalies SET closed_at = $1, closed_reason = $2 \
             WHERE id = $3 AND closed_at IS NULL",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if closed.rows_affected() > 0 {
            super::audit::record(&mut tx, audit).await?;
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM anomalies WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(decode).transpose()
    }
}
