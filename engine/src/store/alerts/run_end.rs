//! The alerts of a run's end: which events its final status raises, and how they read.
//!
//! `failed` and `lost` raise `failure`, `timed_out` raises `timeout`, `succeeded` raises
//! `success` and, when the job's previous finished run (cancelled and skipped runs do not
//! count) was not a success, `recovery`. A channel that wants both hears `recovery` only.

use std::collections::BTreeSet;

use jobdock_types::RunStatus;
use serde_json::json;
use sqlx::Row;

use crate::store::Conn;

use super::{enqueue_for, AlertEvent, AlertKind};
use crate::store::runs::{self, RunRow};
use crate::store::{from_ms, now_ms, Result, StoreError};

/// Enqueues the alerts of run `run_id`'s end; how many rows.
pub(super) async fn enqueue(conn: &mut Conn, run_id: &str) -> Result<usize> {
    let run = runs::get(conn, run_id).await?;
    let previous = match run.status {
        RunStatus::Succeeded => previous_finished(conn, &run).await?,
        _ => None,
    };
    let kinds: &[AlertKind] = match run.status {
        RunStatus::Failed | RunStatus::Lost => &[AlertKind::Failure],
        RunStatus::TimedOut => &[AlertKind::Timeout],
        RunStatus::Succeeded if previous.is_some_and(|p| p != RunStatus::Succeeded) => {
            &[AlertKind::Recovery, AlertKind::Success]
        }
        RunStatus::Succeeded => &[AlertKind::Success],
        _ => return Ok(0),
    };
    let mut told = BTreeSet::new();
    for &kind in kinds {
        let event = AlertEvent {
            kind,
            job: run.job_name.clone(),
            run_id: run.id.clone(),
            occurred_at_ms: run.finished_at.unwrap_or_else(now_ms),
            summary: summary(&run, kind, previous),
            details: details(&run, previous),
        };
        let more = enqueue_for(conn, &event, &told).await?;
        told.extend(more);
    }
    Ok(told.len())
}

/// The final status of the job's latest finished run before this one, not counting cancelled
/// and skipped runs.
async fn previous_finished(conn: &mut Conn, run: &RunRow) -> Result<Option<RunStatus>> {
    let row = sqlx::query(
        // `finished_at IS NOT NULL` lets the database use `runs_job_finished` (by job, newest
        // end first) instead of reading every finished run of every job: with a million runs
        // in the store, each run's end did.
        "SELECT status FROM runs WHERE job_id = $1 AND id <> $2 AND finished_at IS NOT NULL \
         AND status IN ('succeeded', 'failed', 'timed_out', 'lost') \
         ORDER BY finished_at DESC, seq DESC LIMIT 1",
    )
    .bind(&run.job_id)
    .bind(&run.id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        r.try_get::<String, _>("status")?
            .parse()
            .map_err(StoreError::Corrupt)
    })
    .transpose()
}

/// The run's end in words.
pub(super) fn summary(run: &RunRow, kind: AlertKind, previous: Option<RunStatus>) -> String {
    let who = format!("run {} of {}", run.id, run.job_name);
    let took = took(run);
    let reason = run.reason.as_deref().unwrap_or("no reason recorded");
    match (kind, run.status) {
        (AlertKind::Recovery, _) => {
            let before = match previous {
                Some(RunStatus::TimedOut) => "timed out",
                Some(RunStatus::Lost) => "was lost",
                _ => "failed",
            };
            format!("{who} succeeded{took}; the previous run {before}")
        }
        (_, RunStatus::Succeeded) => format!("{who} succeeded{took}"),
        (_, RunStatus::TimedOut) => format!("{who} timed out{took} and was stopped"),
        (_, RunStatus::Lost) => format!("{who} was lost{took}: {reason}"),
        _ => match run.exit_code {
            Some(code) if !run.oom_killed => {
                format!("{who} failed with exit code {code}{took}")
            }
            _ => format!("{who} failed{took}: {reason}"),
        },
    }
}

/// " after 4m12s", or nothing for a run that never started.
fn took(run: &RunRow) -> String {
    match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => format!(" after {}", duration((f - s).max(0))),
        _ => String::new(),
    }
}

/// A duration for people: `850ms`, `12s`, `4m12s`, `2h05m`.
pub(super) fn duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn details(run: &RunRow, previous: Option<RunStatus>) -> serde_json::Value {
    let mut d = json!({
        "status": run.status.as_str(),
        "exit_code": run.exit_code,
        "oom_killed": run.oom_killed,
        "reason": run.reason,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "trigger": run.trigger_kind,
        "started_at": run.started_at.map(from_ms),
        "finished_at": run.finished_at.map(from_ms),
        "duration_ms": run.started_at.zip(run.finished_at).map(|(s, f)| (f - s).max(0)),
    });
    if let Some(p) = previous {
        d["previous_status"] = json!(p.as_str());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, exit_code: Option<i64>) -> RunRow {
        RunRow {
            seq: 1,
            id: "0190abcd".into(),
            job_id: "j".into(),
            job_name: "customer-a-orders".into(),
            status,
            attempt: 1,
            max_attempts: 1,
            spec: Default::default(),
            backend: "docker".into(),
            trigger_kind: "api".into(),
            triggered_by: None,
            idempotency_key: None,
            request_hash: None,
            backend_ref: None,
            exit_code,
            oom_killed: false,
            reason: Some("exited with code 3".into()),
            created_at: 0,
            first_started_at: Some(1_000),
            started_at: Some(1_000),
            finished_at: Some(1_000 + 252_000),
            next_attempt_at: None,
            cancel_requested: false,
            lease_owner: None,
            lease_expires_at: None,
            log_lines: 0,
            log_bytes: 0,
            log_dropped: 0,
            log_mark: Default::default(),
            log_complete: true,
            progress: None,
            progress_at: None,
        }
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_400), "12s");
        assert_eq!(duration(252_000), "4m12s");
        assert_eq!(duration(7_500_000), "2h05m");
    }

    #[test]
    fn summaries_say_what_happened() {
        let failed = run(RunStatus::Failed, Some(3));
        assert_eq!(
            summary(&failed, AlertKind::Failure, None),
            "run 0190abcd of customer-a-orders failed with exit code 3 after 4m12s"
        );
        let mut never = run(RunStatus::Failed, None);
        never.started_at = None;
        never.reason = Some("could not start: no such image".into());
        assert_eq!(
            summary(&never, AlertKind::Failure, None),
            "run 0190abcd of customer-a-orders failed: could not start: no such image"
        );
        let ok = run(RunStatus::Succeeded, Some(0));
        assert_eq!(
            summary(&ok, AlertKind::Recovery, Some(RunStatus::TimedOut)),
            "run 0190abcd of customer-a-orders succeeded after 4m12s; the previous run timed out"
        );
        assert!(
            summary(&run(RunStatus::TimedOut, None), AlertKind::Timeout, None)
                .contains("timed out after 4m12s")
        );
    }
}
