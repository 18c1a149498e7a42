//! The end of an attempt: how it ended, in words; whether another attempt follows; and
//! the order that keeps a crash from losing it — the end kept on the attempt, the backend's
//! objects removed, then the run moved to its final status (or queued again).

use std::sync::Arc;
use std::time::Duration;

use jobdock_backends::{Backend, Exit, RunHandle};
use jobdock_types::{RetryOn, RunStatus};

use super::supervise::{millis, Ended};
use super::Runner;
use crate::store::runs::{self, Outcome, RunRow};
use crate::store::{now_ms, StoreError};

/// Records the end of the attempt — a final status, or the next attempt — and removes what
/// the run created on its backend. The end is first kept on the attempt, then the
/// container (service, secrets, Job) is removed, and only then is the run reported final:
/// a caller that sees a final status finds nothing of the run left running, and an engine
/// that stops in between finds the end on the attempt ([`settle_kept_end`]) rather than
/// losing it. A run whose backend cannot be reached keeps its container for the sweep.
pub(super) async fn record(
    r: &Runner,
    run: &RunRow,
    ended: Ended,
    container: Option<(&Arc<dyn Backend>, &RunHandle)>,
) -> anyhow::Result<()> {
    let store = &r.inner.ctx.store;
    // A supervisor whose lease another replica took over (it was too slow to renew it)
    // leaves the end to that replica, which stores the log and removes the container.
    let now = store.end_check(&run.id).await?;
    if !now.status.is_final() && now.lease_owner.as_deref() != Some(r.inner.owner.as_str()) {
        tracing::warn!("another replica supervises the run now; leaving its end to it");
        return Ok(());
    }
    let gone = !matches!(ended, Ended::Lost { gone: false, .. });
    let (status, mut outcome) = classify(run, ended);
    outcome.finished_at.get_or_insert_with(now_ms);
    append_cap_notice(r, run, now.log_dropped).await?;
    if let (Some((backend, handle)), true) = (container, gone) {
        runs::note_attempt_end(
            &mut store.write_alone().await?,
            &run.id,
            run.attempt,
            status,
            &outcome,
        )
        .await?;
        remove(backend, handle).await;
        return settle(r, run, status, outcome, true).await;
    }
    settle(r, run, status, outcome, gone).await?;
    if let Some((backend, handle)) = container {
        remove(backend, handle).await;
    }
    Ok(())
}

/// Finishes a run whose attempt's end was kept before an engine stopped: its objects are
/// removed (again; removal is idempotent) and the kept end recorded. `false` when the
/// attempt has no kept end.
pub(super) async fn settle_kept_end(
    r: &Runner,
    run: &RunRow,
    backend: &Arc<dyn Backend>,
) -> anyhow::Result<bool> {
    let Some((status, outcome)) = r.inner.ctx.store.attempt_end(&run.id, run.attempt).await? else {
        return Ok(false);
    };
    tracing::info!(%status, "the attempt's end was kept before a restart; recording it");
    if let Some(handle) = run
        .backend_ref
        .as_deref()
        .and_then(|s| serde_json::from_str::<RunHandle>(s).ok())
    {
        remove(backend, &handle).await;
    }
    settle(r, run, status, outcome, true).await?;
    Ok(true)
}

async fn remove(backend: &Arc<dyn Backend>, handle: &RunHandle) {
    if let Err(e) = backend.cleanup(handle).await {
        tracing::warn!(error = %e, "could not remove the container; the sweep will");
    }
}

/// Moves the run to its final status, or queues its next attempt.
async fn settle(
    r: &Runner,
    run: &RunRow,
    status: RunStatus,
    outcome: Outcome,
    gone: bool,
) -> anyhow::Result<()> {
    let retry_on = &run.spec.retry_on;
    let retry = match status {
        RunStatus::Failed if outcome.oom_killed => retry_on.contains(&RetryOn::OomKilled),
        // A run whose container may still run is not started again beside it.
        RunStatus::Lost => gone,
        RunStatus::Failed => true,
        RunStatus::TimedOut => retry_on.contains(&RetryOn::TimedOut),
        _ => false,
    } && run.attempt < run.max_attempts;
    let mut tx = r.inner.ctx.store.begin_write().await?;
    let mut to_deliver = 0;
    let recorded: Option<Option<Duration>> = if retry {
        let backoff = run.spec.retries.map(|r| r.backoff_seconds).unwrap_or(0);
        let mut o = outcome.clone();
        o.reason = Some(format!(
            "{}; attempt {} of {} follows in {backoff} s",
            o.reason.as_deref().unwrap_or("failed"),
            run.attempt + 1,
            run.max_attempts
        ));
        runs::requeue(
            &mut tx,
            &run.id,
            run.attempt,
            status,
            &o,
            now_ms() + backoff * 1000,
        )
        .await?
        .then_some(None)
    } else {
        let finished = runs::finish(&mut tx, &run.id, run.attempt, status, &outcome, gone).await?;
        // A run given up as lost while its container may still run keeps its locks.
        if finished.is_some() && gone && !run.spec.lock_keys.is_empty() {
            runs::release_locks(&mut tx, &run.id).await?;
        }
        to_deliver = finished.as_ref().map_or(0, |f| f.to_deliver);
        finished.map(|f| f.duration())
    };
    // The end-of-run anomalies are decided with the end itself, so that neither is
    // recorded without the other.
    let raised = match recorded.is_some() && !retry {
        true => crate::monitor::after_finish(&mut tx, run, status, &outcome).await?,
        false => Vec::new(),
    };
    tx.commit().await.map_err(StoreError::from)?;
    if let Some(duration) = recorded {
        r.observe_settled(run, status, retry, duration);
        r.inner.ctx.watch.ended(&run.id);
        tracing::info!(status = %status, retry, exit_code = outcome.exit_code, "attempt ended");
    }
    // The alerts' sender is woken only for an end that gave it something to send.
    if to_deliver > 0 || !raised.is_empty() {
        r.alerts_due();
    }
    for a in raised {
        r.inner.ctx.metrics.anomaly_raised(a.kind.as_str());
        tracing::warn!(kind = %a.kind, "{}", a.message);
    }
    Ok(())
}

fn classify(run: &RunRow, ended: Ended) -> (RunStatus, Outcome) {
    let from_exit = |e: &Exit, reason: String| Outcome {
        exit_code: e.exit_code,
        oom_killed: e.oom_killed,
        reason: Some(reason),
        finished_at: millis(e.finished_at),
        started_at: millis(e.started_at),
    };
    match ended {
        Ended::Exited(e) if e.oom_killed && e.exit_code != Some(0) => {
            let limit = run.spec.resources.and_then(|r| r.memory_mb);
            let reason = match limit {
                Some(mb) => format!("killed by the kernel: out of memory (limit {mb} MiB)"),
                None => "killed by the kernel: out of memory".into(),
            };
            (RunStatus::Failed, from_exit(&e, reason))
        }
        Ended::Exited(e) if e.exit_code == Some(0) => (
            RunStatus::Succeeded,
            from_exit(&e, "exited with code 0".into()),
        ),
        Ended::Exited(e) => {
            let reason = match (e.exit_code, &e.reason) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(r)) => r.clone(),
                (None, None) => "ended without an exit code".into(),
            };
            (RunStatus::Failed, from_exit(&e, reason))
        }
        Ended::TimedOut(e) => {
            let t = run.spec.timeout_seconds.unwrap_or_default();
            (
                RunStatus::TimedOut,
                from_exit(
                    &e,
                    format!("ran longer than its timeout of {t} s and was stopped"),
                ),
            )
        }
        Ended::Cancelled(e) => (
            RunStatus::Cancelled,
            from_exit(&e, "cancelled; the container was stopped".into()),
        ),
        Ended::Lost { reason, .. } => (
            RunStatus::Lost,
            Outcome {
                reason: Some(reason),
                ..Default::default()
            },
        ),
        Ended::LaunchFailed(reason) => (
            RunStatus::Failed,
            Outcome {
                reason: Some(reason),
                ..Default::default()
            },
        ),
    }
}

/// Past the cap, the log ends with a line that says how much was dropped.
async fn append_cap_notice(r: &Runner, run: &RunRow, dropped: i64) -> Result<(), StoreError> {
    if dropped == 0 {
        return Ok(());
    }
    let line = crate::store::logs::NewLine {
        attempt: run.attempt,
        ts: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        stream: "jobdock",
        line: format!(
            "log capped at {} MiB: {} further bytes of output were dropped",
            r.inner.config.log_cap_bytes / (1024 * 1024),
            dropped
        ),
    };
    let totals = crate::store::logs::BatchTotals {
        dropped: -dropped,
        ..Default::default()
    };
    r.inner
        .ctx
        .store
        .append_logs(&run.id, &[line], totals)
        .await
}
