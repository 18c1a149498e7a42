//! Runs and their attempts — and the run's state machine: this is the only module that
//! writes a run's `status`. Every transition is a compare-and-set on the current status, so
//! two replicas (or a supervisor and a cancel) can never both move the same run.
//!
//! | from                 | to                         | by                                   |
//! |----------------------|----------------------------|--------------------------------------|
//! | (new)                | queued, skipped            | [`insert`] (trigger)                 |
//! | queued               | starting                   | [`mark_starting`] (dispatch claim)   |
//! | queued               | cancelled                  | [`cancel_queued`]                    |
//! | starting             | running                    | [`mark_running`]                     |
//! | starting, running    | succeeded, failed, timed_out, cancelled, lost | [`finish`]        |
//! | starting, running    | queued (next attempt)      | [`requeue`] (retry)                  |

use jobdock_types::{JobSpec, RunEventKind, RunStatus};
use sqlx::Row;

use crate::store::Conn;

mod queue;
mod supervision;
mod transitions;
mod view;

pub(crate) use queue::holding_locks;
pub use queue::{
    any_due, heads, held, next_of_job, note_behind, unfinished_of_job, DueRun, Held, Unfinished,
};
pub use supervision::EndCheck;
pub use transitions::*;

use super::events::{self, NewEvent};
use super::{now_ms, Result, Store, StoreError};

/// A stored run.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Order of triggering.
    pub seq: i64,
    /// The run's id.
    pub id: String,
    /// The job's internal id.
    pub job_id: String,
    /// The job's name.
    pub job_name: String,
    /// Where it stands.
    pub status: RunStatus,
    /// Current attempt.
    pub attempt: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// The job's definition as it was when the run was triggered, overrides applied.
    pub spec: JobSpec,
    /// Backend name.
    pub backend: String,
    /// `api`, `schedule`, `rerun`.
    pub trigger_kind: String,
    /// Who triggered it.
    pub triggered_by: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Hash of the trigger's body, to spot a reused key with another body.
    pub request_hash: Option<String>,
    /// The backend's handle (JSON), once launched.
    pub backend_ref: Option<String>,
    /// Latest exit code.
    pub exit_code: Option<i64>,
    /// Latest attempt OOM-killed.
    pub oom_killed: bool,
    /// In words.
    pub reason: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the first attempt's start.
    pub first_started_at: Option<i64>,
    /// Unix ms of the latest attempt's start.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// Unix ms.
    pub next_attempt_at: Option<i64>,
    /// A cancel was asked for while the run was starting or running.
    pub cancel_requested: bool,
    /// The replica supervising it.
    pub lease_owner: Option<String>,
    /// Unix ms.
    pub lease_expires_at: Option<i64>,
    /// Log lines stored.
    pub log_lines: i64,
    /// Log bytes stored.
    pub log_bytes: i64,
    /// Log bytes dropped past the cap.
    pub log_dropped: i64,
    /// How far the log is stored, per stream, to resume after a restart.
    pub log_mark: super::logs::LogMark,
    /// False once a backend reported output it could not deliver.
    pub log_complete: bool,
    /// The latest progress its script reported, as written after the marker.
    pub progress: Option<String>,
    /// When, Unix ms.
    pub progress_at: Option<i64>,
}

/// A stored attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// From 1.
    pub attempt: i64,
    /// Its status.
    pub status: RunStatus,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// OOM-killed.
    pub oom_killed: bool,
    /// In words.
    pub reason: Option<String>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
}

/// A run to insert.
#[derive(Debug)]
pub struct NewRun<'a> {
    /// Job id.
    pub job_id: &'a str,
    /// Job name.
    pub job_name: &'a str,
    /// `queued` or `skipped`.
    pub status: RunStatus,
    /// The snapshot.
    pub spec: &'a JobSpec,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// Backend name.
    pub backend: &'a str,
    /// `api`, `schedule`, `rerun`.
    pub trigger_kind: &'a str,
    /// Who.
    pub triggered_by: Option<&'a str>,
    /// Idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// Body hash.
    pub request_hash: Option<&'a str>,
    /// Why (for a skipped run).
    pub reason: Option<&'a str>,
}

#[cfg(test)]
impl<'a> NewRun<'a> {
    /// A queued API-triggered run of `job` on Docker, one attempt: what most tests insert.
    pub fn queued(job: &'a super::jobs::JobRow, spec: &'a JobSpec) -> Self {
        Self {
            job_id: &job.id,
            job_name: &job.name,
            status: RunStatus::Queued,
            spec,
            max_attempts: 1,
            backend: "docker",
            trigger_kind: "api",
            triggered_by: None,
            idempotency_key: None,
            request_hash: None,
            reason: None,
        }
    }
}

/// Moves run `id`'s trigger back to `created_at` (ms), for the tests of what waits too long.
#[cfg(test)]
pub async fn backdate(conn: &mut Conn, id: &str, created_at: i64) -> Result<()> {
    sqlx::query("UPDATE runs SET created_at = $1 WHERE id = $2")
        .bind(created_at)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How an attempt ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Exit code.
    pub exit_code: Option<i64>,
    /// OOM-killed.
    pub oom_killed: bool,
    /// In words.
    pub reason: Option<String>,
    /// Unix ms; now when `None`.
    pub finished_at: Option<i64>,
    /// Unix ms, when the backend knows it better than the engine.
    pub started_at: Option<i64>,
}

pub(super) const COLUMNS: &str =
    "seq, id, job_id, job_name, status, attempt, max_attempts, spec, backend, \
    trigger_kind, triggered_by, idempotency_key, request_hash, backend_ref, exit_code, oom_killed, \
    reason, created_at, first_started_at, started_at, finished_at, next_attempt_at, \
    cancel_requested, lease_owner, lease_expires_at, log_lines, log_bytes, log_dropped, \
    last_out_ts, last_out_n, last_err_ts, last_err_n, log_out_cursor, log_err_cursor, \
    log_cursor_attempt, log_complete, progress, progress_at";

fn status(s: String) -> Result<RunStatus> {
    s.parse().map_err(StoreError::Corrupt)
}

pub(crate) fn decode(r: &sqlx::any::AnyRow) -> Result<RunRow> {
    let spec: String = r.try_get("spec")?;
    Ok(RunRow {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        job_name: r.try_get("job_name")?,
        status: status(r.try_get("status")?)?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::Corrupt(format!("run snapshot: {e}")))?,
        backend: r.try_get("backend")?,
        trigger_kind: r.try_get("trigger_kind")?,
        triggered_by: r.try_get("triggered_by")?,
        idempotency_key: r.try_get("idempotency_key")?,
        request_hash: r.try_get("request_hash")?,
        backend_ref: r.try_get("backend_ref")?,
        exit_code: r.try_get("exit_code")?,
        oom_killed: r.try_get::<i64, _>("oom_killed")? != 0,
        reason: r.try_get("reason")?,
        created_at: r.try_get("created_at")?,
        first_started_at: r.try_get("first_started_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        log_lines: r.try_get("log_lines")?,
        log_bytes: r.try_get("log_bytes")?,
        log_dropped: r.try_get("log_dropped")?,
        log_mark: decode_mark(r)?,
        log_complete: r.try_get::<i64, _>("log_complete")? != 0,
        progress: r.try_get("progress")?,
        progress_at: r.try_get("progress_at")?,
    })
}

/// The columns of a run's log mark, as [`decode_mark`] reads them.
pub(super) const MARK_COLUMNS: &str =
    "last_out_ts, last_out_n, log_out_cursor, last_err_ts, last_err_n, \
    log_err_cursor, log_cursor_attempt";

pub(super) fn decode_mark(r: &sqlx::any::AnyRow) -> Result<super::logs::LogMark> {
    Ok(super::logs::LogMark {
        stdout: super::logs::StreamMark {
            ts: r.try_get("last_out_ts")?,
            n: r.try_get("last_out_n")?,
            cursor: r.try_get("log_out_cursor")?,
        },
        stderr: super::logs::StreamMark {
            ts: r.try_get("last_err_ts")?,
            n: r.try_get("last_err_n")?,
            cursor: r.try_get("log_err_cursor")?,
        },
        cursor_attempt: r.try_get("log_cursor_attempt")?,
    })
}

/// Inserts a run. A clash on the idempotency key is [`StoreError::Conflict`].
pub async fn insert(conn: &mut Conn, new: NewRun<'_>) -> Result<RunRow> {
    let now = now_ms();
    let finished = new.status.is_final().then_some(now);
    let row = sqlx::query(&format!(
        "INSERT INTO runs (id, job_id, job_name, status, max_attempts, spec, backend, trigger_kind, \
         triggered_by, idempotency_key, request_hash, reason, created_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {COLUMNS}"
    ))
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(new.job_id)
    .bind(new.job_name)
    .bind(new.status.as_str())
    .bind(new.max_attempts)
    .bind(serde_json::to_string(new.spec).expect("a JobSpec serialises"))
    .bind(new.backend)
    .bind(new.trigger_kind)
    .bind(new.triggered_by)
    .bind(new.idempotency_key)
    .bind(new.request_hash)
    .bind(new.reason)
    .bind(now)
    .bind(finished)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| StoreError::on_unique(e, "a run with this idempotency key"))?;
    let run = decode(&row)?;
    let by = match new.triggered_by {
        Some(who) => format!("{} ({who})", new.trigger_kind),
        None => new.trigger_kind.to_owned(),
    };
    let event = match (run.status, new.reason) {
        (RunStatus::Skipped, reason) => NewEvent::new(
            &run.id,
            1,
            RunEventKind::Skipped,
            format!(
                "triggered by {by} and skipped: {}",
                reason.unwrap_or("a run of the job is active")
            ),
        ),
        _ => NewEvent::new(
            &run.id,
            1,
            RunEventKind::Queued,
            format!("triggered by {by}"),
        ),
    };
    events::record(conn, event).await?;
    if !run.status.is_final() {
        for key in &new.spec.lock_keys {
            sqlx::query("INSERT INTO run_locks (run_id, key) VALUES ($1, $2)")
                .bind(&run.id)
                .bind(key)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(run)
}

/// One run, read on the caller's connection.
pub async fn get(conn: &mut Conn, id: &str) -> Result<RunRow> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    decode(&row)
}

/// The run of a job with this idempotency key.
pub async fn by_idempotency_key(
    conn: &mut Conn,
    job_id: &str,
    key: &str,
) -> Result<Option<RunRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM runs WHERE job_id = $1 AND idempotency_key = $2"
    ))
    .bind(job_id)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(decode).transpose()
}

/// The runs holding a slot of a job, oldest first (to name one in a refusal).
pub async fn holding_for_job(conn: &mut Conn, job_id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM runs WHERE job_id = $1 AND holds_slot = 1 ORDER BY seq")
        .bind(job_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}

/// The runs of a job that are not final, oldest first.
pub async fn unfinished_for_job(conn: &mut Conn, job_id: &str) -> Result<Vec<RunRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM runs WHERE job_id = $1 \
         AND status IN ('queued', 'starting', 'running') ORDER BY seq"
    ))
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

impl Store {
    /// One run.
    pub async fn run(&self, id: &str) -> Result<RunRow> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?
            .ok_or(StoreError::NotFound)?;
        decode(&row)
    }

    /// Runs newest first, optionally of one job and in one status, before `before_seq`.
    pub async fn runs(
        &self,
        job: Option<&str>,
        status: Option<RunStatus>,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RunRow>> {
        // Only the filters given are in the statement: `($2 IS NULL OR job_name = $2)` keeps
        // both databases from using the (job_name, seq) and (status, seq) indexes, and a page
        // of one job's runs then scanned the whole table newest first (30 ms with a million
        // runs, against 4 ms for an empty store).
        let mut sql = format!("SELECT {COLUMNS} FROM runs WHERE seq < $1");
        let mut n = 1;
        for (column, given) in [("job_name", job.is_some()), ("status", status.is_some())] {
            if given {
                n += 1;
                sql.push_str(&format!(" AND {column} = ${n}"));
            }
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", n + 1));
        let mut q = sqlx::query(&sql).bind(before_seq.unwrap_or(i64::MAX));
        if let Some(job) = job {
            q = q.bind(job);
        }
        if let Some(status) = status {
            q = q.bind(status.as_str());
        }
        let rows = q.bind(limit).fetch_all(&mut self.read().await?).await?;
        rows.iter().map(decode).collect()
    }

    /// A run's attempts, in order.
    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(
            "SELECT attempt, status, exit_code, oom_killed, reason, started_at, finished_at \
             FROM run_attempts WHERE run_id = $1 ORDER BY attempt",
        )
        .bind(run_id)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    attempt: r.try_get("attempt")?,
                    status: status(r.try_get("status")?)?,
                    exit_code: r.try_get("exit_code")?,
                    oom_killed: r.try_get::<i64, _>("oom_killed")? != 0,
                    reason: r.try_get("reason")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                })
            })
            .collect()
    }

    /// How an attempt ended, when [`note_attempt_end`] kept it.
    pub async fn attempt_end(
        &self,
        id: &str,
        attempt: i64,
    ) -> Result<Option<(RunStatus, Outcome)>> {
        let row = sqlx::query(
            "SELECT ended_as, exit_code, oom_killed, reason, started_at, finished_at \
             FROM run_attempts WHERE run_id = $1 AND attempt = $2 AND ended_as IS NOT NULL",
        )
        .bind(id)
        .bind(attempt)
        .fetch_optional(&mut self.read().await?)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let outcome = Outcome {
            exit_code: r.try_get("exit_code")?,
            oom_killed: r.try_get::<i64, _>("oom_killed")? != 0,
            reason: r.try_get("reason")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
        };
        Ok(Some((status(r.try_get("ended_as")?)?, outcome)))
    }

    /// Records the backend's handle of a run's current attempt, with the event that says it
    /// was launched: one transaction (two cost a commit more for every run).
    pub async fn record_launch(
        &self,
        id: &str,
        attempt: i64,
        handle: &str,
        launched: NewEvent<'_>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE runs SET backend_ref = $1 WHERE id = $2 AND attempt = $3")
            .bind(handle)
            .bind(id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
        events::record(&mut tx, launched).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Of the starting and running runs whose lease `owner` holds, those with a cancel asked
    /// for: one statement, which reads only the runs with a cancel asked for (an index of
    /// them by owner). Read through the status of every run going, it took 86 µs with 300
    /// running (against 4 µs), every second.
    pub async fn cancels_requested_of(&self, owner: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM runs WHERE status IN ('starting', 'running') AND cancel_requested = 1 \
             AND lease_owner = $1",
        )
        .bind(owner)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Whether a cancel was asked for.
    pub async fn cancel_requested(&self, id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT cancel_requested FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>("cancel_requested")? != 0,
            None => false,
        })
    }

    /// A job's latest run (by trigger): its id, status, trigger time and end time (Unix ms).
    pub async fn last_run_of(&self, job_name: &str) -> Result<Option<LastRunRow>> {
        let row = sqlx::query(
            "SELECT id, status, created_at, finished_at FROM runs WHERE job_name = $1 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(job_name)
        .fetch_optional(&mut self.read().await?)
        .await?;
        row.map(|r| {
            Ok(LastRunRow {
                id: r.try_get("id")?,
                status: status(r.try_get("status")?)?,
                created_at_ms: r.try_get("created_at")?,
                finished_at_ms: r.try_get("finished_at")?,
            })
        })
        .transpose()
    }

    /// A run's status, if the run exists.
    pub async fn status_of(&self, id: &str) -> Result<Option<RunStatus>> {
        let row = sqlx::query("SELECT status FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?;
        row.map(|r| status(r.try_get("status")?)).transpose()
    }

    /// Of the runs `ids`, those that exist and have not ended.
    pub async fn unfinished_of(&self, ids: &[&str]) -> Result<std::collections::HashSet<String>> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let sql = format!(
            "SELECT id FROM runs WHERE id IN ({}) AND status IN ('queued', 'starting', 'running')",
            crate::store::placeholders(ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&mut self.read().await?).await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}

/// A job's latest run, as a job's view shows it.
#[derive(Debug, Clone)]
pub struct LastRunRow {
    pub id: String,
    pub status: RunStatus,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}
