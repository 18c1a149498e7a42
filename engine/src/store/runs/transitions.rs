//! The run state machine's transitions: queued → starting → running → a final status (or
//! queued again for the next attempt). Each is a compare-and-set on the run's status and
//! attempt, written with its timeline event in the caller's transaction.

use jobdock_types::{RunEventKind, RunStatus};
use sqlx::Row;

use crate::store::Conn;

use super::Outcome;
use crate::store::events::{self, NewEvent};
use crate::store::{now_ms, Result};

/// queued → starting: the caller's replica takes the run under a lease.
pub async fn mark_starting(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    lease_until: i64,
) -> Result<bool> {
    // How long it waited, and for what, for the timeline.
    let before = sqlx::query(
        "SELECT attempt, created_at, next_attempt_at, waiting_for FROM runs \
         WHERE id = $1 AND status = 'queued'",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(before) = before else {
        return Ok(false);
    };
    let attempt: i64 = before.try_get("attempt")?;
    let since: i64 = match before.try_get::<Option<i64>, _>("next_attempt_at")? {
        Some(at) if attempt > 1 => at,
        _ => before.try_get("created_at")?,
    };
    let waiting_for: Option<String> = before.try_get("waiting_for")?;
    let done = sqlx::query(
        "UPDATE runs SET status = 'starting', holds_slot = 1, lease_owner = $1, \
         lease_expires_at = $2, next_attempt_at = NULL, backend_ref = NULL, waiting_for = NULL \
         WHERE id = $3 AND status = 'queued'",
    )
    .bind(owner)
    .bind(lease_until)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO run_attempts (run_id, attempt, status) \
         SELECT id, attempt, 'starting' FROM runs WHERE id = $1 \
         ON CONFLICT (run_id, attempt) DO UPDATE SET status = 'starting'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let waited_ms = (now_ms() - since).max(0);
    let message = match &waiting_for {
        Some(w) => format!("claimed after {} ({w})", seconds(waited_ms)),
        None => format!("claimed after {} in the queue", seconds(waited_ms)),
    };
    let event = NewEvent::new(id, attempt, RunEventKind::Claimed, message)
        .detail(serde_json::json!({ "waited_ms": waited_ms, "waited_for": waiting_for }));
    events::record(conn, event).await?;
    Ok(true)
}

/// `12.3 s`, for messages.
pub fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// queued → cancelled.
pub async fn cancel_queued(conn: &mut Conn, id: &str, reason: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET status = 'cancelled', reason = $1, finished_at = $2, next_attempt_at = NULL \
         WHERE id = $3 AND status = 'queued'",
    )
    .bind(reason)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    release_locks(conn, id).await?;
    let event = NewEvent::new(
        id,
        current_attempt(conn, id).await?,
        RunEventKind::Finished,
        format!("cancelled: {reason}"),
    )
    .detail(serde_json::json!({ "status": "cancelled" }));
    events::record(conn, event).await?;
    crate::store::callbacks::enqueue_run_end(conn, id).await?;
    crate::store::notify::run_ended(conn, id).await?;
    Ok(true)
}

/// Asks the supervisor of a starting or running run to stop it.
pub async fn request_cancel(conn: &mut Conn, id: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET cancel_requested = 1 WHERE id = $1 AND status IN ('starting', 'running') \
         AND cancel_requested = 0",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        let attempt = current_attempt(conn, id).await?;
        let message = "cancel requested; stopping the container".to_owned();
        events::record(
            conn,
            NewEvent::new(id, attempt, RunEventKind::CancelRequested, message),
        )
        .await?;
        return Ok(true);
    }
    // Asked before: still a request in force.
    let again =
        sqlx::query("SELECT 1 AS x FROM runs WHERE id = $1 AND status IN ('starting', 'running')")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(again.is_some())
}

/// The run's current attempt.
async fn current_attempt(conn: &mut Conn, id: &str) -> Result<i64> {
    let row = sqlx::query("SELECT attempt FROM runs WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get("attempt")?)
}

/// starting → running, for the given attempt.
pub async fn mark_running(
    conn: &mut Conn,
    id: &str,
    attempt: i64,
    started_at: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET status = 'running', started_at = $1, \
         first_started_at = COALESCE(first_started_at, $1) \
         WHERE id = $2 AND attempt = $3 AND status = 'starting'",
    )
    .bind(started_at)
    .bind(id)
    .bind(attempt)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let o = Outcome {
        started_at: Some(started_at),
        ..Default::default()
    };
    update_attempt(conn, id, attempt, RunStatus::Running, &o).await?;
    let message = match attempt {
        1 => "the container started".to_owned(),
        n => format!("attempt {n}'s container started"),
    };
    events::record(
        conn,
        NewEvent::new(id, attempt, RunEventKind::Started, message),
    )
    .await?;
    Ok(true)
}

async fn update_attempt(
    conn: &mut Conn,
    id: &str,
    attempt: i64,
    status: RunStatus,
    o: &Outcome,
) -> Result<()> {
    sqlx::query(
        "UPDATE run_attempts SET status = $1, exit_code = COALESCE($2, exit_code), \
         oom_killed = $3, reason = COALESCE($4, reason), started_at = COALESCE($5, started_at), \
         finished_at = $6 WHERE run_id = $7 AND attempt = $8",
    )
    .bind(status.as_str())
    .bind(o.exit_code)
    .bind(o.oom_killed as i64)
    .bind(o.reason.as_deref())
    .bind(o.started_at)
    .bind(
        status
            .is_final()
            .then(|| o.finished_at.unwrap_or_else(now_ms)),
    )
    .bind(id)
    .bind(attempt)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Forgets which locks run `id` needs, once it has ended and freed its slots: the lock
/// checks read the rows of a key, which would otherwise grow with every run ever made.
pub async fn release_locks(conn: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM run_locks WHERE run_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A run's end as [`finish`] stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Unix ms of the latest attempt's start, if it started.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: i64,
    /// How many alerts and callbacks the end put in the outbox.
    pub to_deliver: usize,
}

impl Finished {
    /// How long the attempt ran, if it started.
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.started_at
            .map(|s| std::time::Duration::from_millis((self.finished_at - s).max(0) as u64))
    }
}

/// starting | running → a final status, for the given attempt; `None` when the run was not
/// in that attempt any more. The run's slots are released unless `container_gone` is false
/// (a run given up as lost while its backend could not be reached): those wait until the
/// backend confirms the container is gone.
pub async fn finish(
    conn: &mut Conn,
    id: &str,
    attempt: i64,
    to: RunStatus,
    o: &Outcome,
    container_gone: bool,
) -> Result<Option<Finished>> {
    debug_assert!(to.is_final());
    let finished = o.finished_at.unwrap_or_else(now_ms);
    // RETURNING gives the stored start with the end (for the metrics) without another read.
    let done = sqlx::query(
        "UPDATE runs SET status = $1, exit_code = $2, oom_killed = $3, reason = $4, finished_at = $5, \
         started_at = COALESCE(started_at, $6), first_started_at = COALESCE(first_started_at, $6), \
         lease_owner = NULL, lease_expires_at = NULL, holds_slot = $9 \
         WHERE id = $7 AND attempt = $8 AND status IN ('starting', 'running') \
         RETURNING started_at",
    )
    .bind(to.as_str())
    .bind(o.exit_code)
    .bind(o.oom_killed as i64)
    .bind(o.reason.as_deref())
    .bind(finished)
    .bind(o.started_at)
    .bind(id)
    .bind(attempt)
    .bind(if container_gone { 0i64 } else { 1 })
    .fetch_optional(&mut *conn)
    .await?;
    let Some(done) = done else {
        return Ok(None);
    };
    let mut stored = Finished {
        started_at: done.try_get("started_at")?,
        finished_at: finished,
        to_deliver: 0,
    };
    update_attempt(
        conn,
        id,
        attempt,
        to,
        &Outcome {
            finished_at: Some(finished),
            ..o.clone()
        },
    )
    .await?;
    let message = match &o.reason {
        Some(reason) => format!("{to}: {reason}"),
        None => to.to_string(),
    };
    let event = NewEvent::new(id, attempt, RunEventKind::Finished, message)
        .detail(serde_json::json!({ "status": to.as_str(), "exit_code": o.exit_code }));
    events::record(conn, event).await?;
    crate::store::stats::record(conn, id).await?;
    let needs = EndNeeds::of(conn, id).await?;
    if to == RunStatus::Succeeded && needs.held_state {
        commit_held_state(conn, id).await?;
    }
    if needs.alert_channels {
        stored.to_deliver += crate::store::alerts::enqueue_run_end(conn, id).await?;
    }
    if needs.callbacks {
        stored.to_deliver += crate::store::callbacks::put_run_end(conn, id).await?;
    }
    crate::store::notify::run_ended(conn, id).await?;
    Ok(Some(stored))
}

/// Keeps how an attempt ended (`to`, and the outcome with its finish time) on the attempt,
/// while the run itself stays as it is until [`finish`] or [`requeue`].
pub async fn note_attempt_end(
    conn: &mut Conn,
    id: &str,
    attempt: i64,
    to: RunStatus,
    o: &Outcome,
) -> Result<()> {
    sqlx::query(
        "UPDATE run_attempts SET ended_as = $1, exit_code = $2, oom_killed = $3, reason = $4, \
         started_at = COALESCE($5, started_at), finished_at = $6 \
         WHERE run_id = $7 AND attempt = $8",
    )
    .bind(to.as_str())
    .bind(o.exit_code)
    .bind(o.oom_killed as i64)
    .bind(o.reason.as_deref())
    .bind(o.started_at)
    .bind(o.finished_at)
    .bind(id)
    .bind(attempt)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// starting | running → queued for the next attempt: the ended attempt keeps `ended_as`.
pub async fn requeue(
    conn: &mut Conn,
    id: &str,
    attempt: i64,
    ended_as: RunStatus,
    o: &Outcome,
    next_attempt_at: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET status = 'queued', attempt = attempt + 1, exit_code = $1, oom_killed = $2, \
         reason = $3, next_attempt_at = $4, lease_owner = NULL, lease_expires_at = NULL, \
         backend_ref = NULL, cancel_requested = 0, holds_slot = 0 \
         WHERE id = $5 AND attempt = $6 AND status IN ('starting', 'running')",
    )
    .bind(o.exit_code)
    .bind(o.oom_killed as i64)
    .bind(o.reason.as_deref())
    .bind(next_attempt_at)
    .bind(id)
    .bind(attempt)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    update_attempt(conn, id, attempt, ended_as, o).await?;
    let message = format!(
        "attempt {attempt} ended {ended_as}: {}",
        o.reason.as_deref().unwrap_or("no reason given")
    );
    let event = NewEvent::new(id, attempt, RunEventKind::RetryScheduled, message).detail(
        serde_json::json!({ "ended_as": ended_as.as_str(), "next_attempt_at": next_attempt_at }),
    );
    events::record(conn, event).await?;
    Ok(true)
}

/// What the end of a run has to do beyond moving it, read in one statement: most runs hold
/// no state and have no callbacks, and most stores have no alert channel, so each part is
/// skipped without a savepoint and its statements — and without a read of its own (each
/// is a trip to SQLite's connection thread and back, the larger part of what a run costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndNeeds {
    /// The run holds a state for its job (committed if it succeeded).
    pub held_state: bool,
    /// The run has callbacks to call.
    pub callbacks: bool,
    /// An alert channel exists (the run's end may be told to it).
    pub alert_channels: bool,
}

impl EndNeeds {
    pub(crate) async fn of(conn: &mut Conn, id: &str) -> Result<Self> {
        // `CASE … THEN 1 ELSE 0`: an integer in both dialects (`EXISTS` alone is an integer on
        // SQLite, a boolean on PostgreSQL).
        let row = sqlx::query(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM run_held_states WHERE run_id = $1) \
                     THEN 1 ELSE 0 END AS held_state, \
                    CASE WHEN EXISTS (SELECT 1 FROM run_callbacks WHERE run_id = $1) \
                     THEN 1 ELSE 0 END AS callbacks, \
                    CASE WHEN EXISTS (SELECT 1 FROM alert_channels) THEN 1 ELSE 0 END \
                     AS alert_channels",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        let flag = |name: &str| -> Result<bool> { Ok(row.try_get::<i64, _>(name)? != 0) };
        Ok(Self {
            held_state: flag("held_state")?,
            callbacks: flag("callbacks")?,
            alert_channels: flag("alert_channels")?,
        })
    }
}

/// Makes the state a run that succeeded held its job's state, in the transaction that
/// ended it (called when [`EndNeeds`] found one). A failure is logged and leaves the
/// bookmark where it was (the next run loads again from there), and never fails the run's
/// end.
async fn commit_held_state(conn: &mut Conn, id: &str) -> Result<()> {
    conn.savepoint().await?;
    let job: String = sqlx::query("SELECT job_name FROM runs WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| sqlx::Row::try_get(&r, "job_name"))?;
    let committed = match crate::store::state::commit_held(&mut *conn, &job, id).await {
        Ok(Some(version)) => {
            let by = format!("run {id}");
            let entry = crate::store::NewAuditEntry {
                token_id: None,
                token_name: Some(&by),
                action: "state.commit",
                target: &job,
                detail: serde_json::json!({ "version": version, "run_id": id, "on": "success" }),
                request_id: None,
            };
            crate::store::audit::record(&mut *conn, entry).await
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match committed {
        Ok(()) => conn.release_savepoint().await?,
        Err(e) => {
            conn.rollback_to_savepoint().await?;
            tracing::error!(run_id = id, error = %e, "could not make the run's state its job's; the job keeps its previous state");
        }
    }
    Ok(())
}
