//! One task per run attempt: launch (or find again), mark running, store the log while
//! waiting for the end, enforce timeout and cancel, then record the end: once the exit
//! status and the complete log are stored, the container is removed and the run reported
//! final.

use std::sync::Arc;
use std::time::Duration;

use jobdock_backends::{Backend, BackendError, Exit, RunHandle, TaskState};
use jobdock_types::{RetryOn, RunEventKind, RunStatus};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::launch::launch_spec;
use super::logpump::{Position, Pump, PumpError};
use super::redact::Redactor;
use super::Runner;
use crate::service::jobs::DEFAULT_STOP_GRACE_SECONDS;
use crate::store::events::NewEvent;
use crate::store::runs::{self, Outcome, RunRow};
use crate::store::{now_ms, StoreError};

/// How an attempt ended, as the supervisor saw it.
#[derive(Debug)]
enum Ended {
    /// The container exited by itself.
    Exited(Exit),
    /// Stopped for running past its timeout.
    TimedOut(Exit),
    /// Stopped because a cancel was asked for.
    Cancelled(Exit),
    /// The backend no longer knows it (`gone`), or could not be reached for too long (its
    /// container may still run: its slots stay taken until the backend confirms).
    Lost { reason: String, gone: bool },
    /// It never started.
    LaunchFailed(String),
}

/// Why supervision stopped without an end to record.
enum Detach {
    /// The engine is shutting down; the container keeps running and is adopted later.
    Shutdown,
}

pub(super) async fn supervise(r: Runner, run: RunRow) {
    let id = run.id.clone();
    if let Err(e) = attempt(&r, run).await {
        // The lease expires and the run is adopted again, by this replica or another.
        tracing::error!(run_id = %id, error = %format!("{e:#}"), "supervising the run failed");
    }
    r.wake();
}

fn millis(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

async fn attempt(r: &Runner, run: RunRow) -> anyhow::Result<()> {
    let ctx = &r.inner.ctx;
    let backend = r
        .inner
        .backends
        .get(&run.backend)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("backend {} is not configured here", run.backend))?;
    if settle_kept_end(r, &run, &backend).await? {
        return Ok(());
    }
    let secrets = crate::service::jobs::open_secrets_of(ctx, &run.job_id, &run.job_name).await?;
    let redactor = Redactor::new(&secrets.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());

    let handle = match launch(r, &backend, &run, secrets).await? {
        Ok(h) => h,
        Err(ended) => return record(r, &run, ended, None).await,
    };
    let Some(started_at) = wait_until_started(r, &backend, &handle, &run).await? else {
        return Ok(());
    };
    if run.status == RunStatus::Starting {
        let mut tx = ctx.store.begin_write().await?;
        runs::mark_running(&mut tx, &run.id, run.attempt, started_at).await?;
        tx.commit().await.map_err(StoreError::from)?;
    }

    let logs_done = CancellationToken::new();
    let pump = tokio::spawn(pump_logs(
        r.clone(),
        backend.clone(),
        handle.clone(),
        run.clone(),
        redactor.clone(),
        logs_done.clone(),
    ));
    let ended = match watch(r, &backend, &handle, &run, started_at).await {
        Ok(e) => e,
        Err(Detach::Shutdown) => {
            pump.abort();
            return Ok(());
        }
    };
    if matches!(ended, Ended::Lost { gone: false, .. }) {
        // The backend cannot be reached: its log stream cannot move either.
        pump.abort();
    } else {
        drain(r, &run.id, pump).await;
        // A followed stream can end a moment before the container's last lines reach it (seen
        // with Docker on a busy machine). One more read of the ended container's log, from
        // the stored marks, stores whatever the follow missed; the marks skip the rest.
        let again = tokio::spawn(pump_logs(
            r.clone(),
            backend.clone(),
            handle.clone(),
            run.clone(),
            redactor,
            logs_done.clone(),
        ));
        drain(r, &run.id, again).await;
    }
    logs_done.cancel();
    record(r, &run, ended, Some((&backend, &handle))).await
}

/// Waits for the log to be stored completely: the stream ends with the container. A busy
/// machine may take long to store a chatty run's last lines, so the wait goes on as long
/// as lines keep arriving; only a stream that stops moving for a while is given up on.
async fn drain(r: &Runner, run_id: &str, pump: tokio::task::JoinHandle<()>) {
    const STILL: Duration = Duration::from_secs(30);
    tokio::pin!(pump);
    let progress = || async {
        r.inner
            .ctx
            .store
            .run(run_id)
            .await
            .map(|r| r.log_lines + r.log_dropped)
            .ok()
    };
    let mut stored = progress().await;
    loop {
        tokio::select! {
            _ = &mut pump => return,
            _ = tokio::time::sleep(STILL) => {}
        }
        let now = progress().await;
        if now == stored {
            tracing::warn!(
                "the log stream has not moved for 30 s after the container ended; giving up on it"
            );
            pump.abort();
            return;
        }
        stored = now;
    }
}

/// Launches the attempt, or finds the container it already has. The outer error is for
/// the engine's own failures; the inner one is an attempt that could not start.
async fn launch(
    r: &Runner,
    backend: &Arc<dyn Backend>,
    run: &RunRow,
    secrets: Vec<(String, SecretString)>,
) -> anyhow::Result<Result<RunHandle, Ended>> {
    if let Some(h) = run
        .backend_ref
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
    {
        return Ok(Ok(h));
    }
    let spec = match launch_spec(run, &r.inner.installation_id, secrets) {
        Ok(s) => s,
        Err(reason) => return Ok(Err(Ended::LaunchFailed(reason))),
    };
    let give_up = tokio::time::Instant::now() + r.inner.config.reattach_window;
    loop {
        let asked = std::time::Instant::now();
        match backend.launch(&spec).await {
            Ok(h) => {
                let took = asked.elapsed().as_millis() as i64;
                let json = serde_json::to_string(&h)?;
                let store = &r.inner.ctx.store;
                store.set_backend_ref(&run.id, run.attempt, &json).await?;
                let message = format!(
                    "{} accepted the container in {} (image pull included)",
                    run.backend,
                    runs::seconds(took)
                );
                let event = NewEvent::new(&run.id, run.attempt, RunEventKind::Launched, message)
                    .detail(serde_json::json!({ "took_ms": took, "backend": run.backend }));
                store.record_event(event).await?;
                return Ok(Ok(h));
            }
            Err(e @ (BackendError::Unavailable(_) | BackendError::Api { status: None, .. }))
                if tokio::time::Instant::now() < give_up =>
            {
                tracing::warn!(error = %e, "backend unavailable; retrying the launch");
                tokio::select! {
                    _ = r.inner.shutdown.cancelled() => anyhow::bail!("shutting down"),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            Err(e) => return Ok(Err(Ended::LaunchFailed(format!("could not start: {e}")))),
        }
    }
}

/// Waits while the scheduler places and pulls; the start time, or `None` when the run
/// already got its end recorded (cancelled or lost before it ever ran).
async fn wait_until_started(
    r: &Runner,
    backend: &Arc<dyn Backend>,
    handle: &RunHandle,
    run: &RunRow,
) -> anyhow::Result<Option<i64>> {
    loop {
        match backend.state(handle).await {
            Ok(TaskState::Running { started_at }) => {
                return Ok(Some(
                    millis(started_at).or(run.started_at).unwrap_or_else(now_ms),
                ))
            }
            Ok(TaskState::Exited(e)) => {
                return Ok(Some(millis(e.started_at).unwrap_or_else(now_ms)))
            }
            Ok(TaskState::NotFound) => {
                record(r, run, lost_gone(), None).await?;
                return Ok(None);
            }
            Ok(TaskState::Pending { .. }) | Err(_) => {}
        }
        if r.inner.ctx.store.cancel_requested(&run.id).await? {
            let grace = grace(run);
            let _ = backend.stop(handle, grace).await;
            let exit = backend.wait(handle).await.unwrap_or_else(|_| empty_exit());
            record(r, run, Ended::Cancelled(exit), Some((backend, handle))).await?;
            return Ok(None);
        }
        tokio::select! {
            _ = r.inner.shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn lost_gone() -> Ended {
    Ended::Lost {
        reason: "the backend no longer knows the run's container".into(),
        gone: true,
    }
}

fn empty_exit() -> Exit {
    Exit {
        exit_code: None,
        oom_killed: false,
        deadline_exceeded: false,
        started_at: None,
        finished_at: None,
        reason: None,
    }
}

fn grace(run: &RunRow) -> Duration {
    Duration::from_secs(
        run.spec
            .stop_grace_seconds
            .unwrap_or(DEFAULT_STOP_GRACE_SECONDS)
            .max(0) as u64,
    )
}

/// Why the supervisor is stopping the container, if it is.
#[derive(Clone, Copy, PartialEq)]
enum Stopping {
    Timeout,
    Cancel,
}

/// Waits for the end, stopping the container on timeout or cancel, and riding out a
/// backend that goes away for less than the re-attach window.
async fn watch(
    r: &Runner,
    backend: &Arc<dyn Backend>,
    handle: &RunHandle,
    run: &RunRow,
    started_at: i64,
) -> Result<Ended, Detach> {
    let deadline = run.spec.timeout_seconds.map(|t| {
        let at = started_at + t * 1000;
        tokio::time::Instant::now() + Duration::from_millis((at - now_ms()).max(0) as u64)
    });
    let mut stopping: Option<Stopping> = None;
    let mut cancel_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let mut wait = backend.wait(handle);
        let result = loop {
            tokio::select! {
                res = &mut wait => break res,
                _ = r.inner.shutdown.cancelled() => return Err(Detach::Shutdown),
                _ = sleep_until(deadline), if stopping.is_none() && deadline.is_some() => {
                    tracing::info!("timeout reached; stopping the container");
                    stopping = Some(Stopping::Timeout);
                    spawn_stop(backend, handle, grace(run));
                }
                _ = cancel_check.tick(), if stopping.is_none() => {
                    if r.inner.ctx.store.cancel_requested(&run.id).await.unwrap_or(false) {
                        tracing::info!("cancel requested; stopping the container");
                        stopping = Some(Stopping::Cancel);
                        spawn_stop(backend, handle, grace(run));
                    }
                }
            }
        };
        match result {
            Ok(exit) => {
                return Ok(match stopping {
                    Some(Stopping::Timeout) => Ended::TimedOut(exit),
                    Some(Stopping::Cancel) => Ended::Cancelled(exit),
                    None if exit.deadline_exceeded => Ended::TimedOut(exit),
                    None => Ended::Exited(exit),
                })
            }
            Err(BackendError::NotFound(_)) => return Ok(lost_gone()),
            Err(e) => {
                tracing::warn!(error = %e, "lost contact with the backend; waiting for it to come back");
                if let Some(ended) = reattach(r, backend, handle).await? {
                    return Ok(ended);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn spawn_stop(backend: &Arc<dyn Backend>, handle: &RunHandle, grace: Duration) {
    let (backend, handle) = (backend.clone(), handle.clone());
    tokio::spawn(async move {
        if let Err(e) = backend.stop(&handle, grace).await {
            tracing::warn!(error = %e, "stopping the container failed");
        }
    });
}

/// Polls the backend until it answers again: `None` to resume waiting, or how the run ended.
async fn reattach(
    r: &Runner,
    backend: &Arc<dyn Backend>,
    handle: &RunHandle,
) -> Result<Option<Ended>, Detach> {
    let window = r.inner.config.reattach_window;
    let give_up = tokio::time::Instant::now() + window;
    loop {
        tokio::select! {
            _ = r.inner.shutdown.cancelled() => return Err(Detach::Shutdown),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match backend.state(handle).await {
            Ok(TaskState::Exited(exit)) => return Ok(Some(Ended::Exited(exit))),
            Ok(TaskState::NotFound) => return Ok(Some(lost_gone())),
            Ok(_) => return Ok(None),
            Err(_) if tokio::time::Instant::now() >= give_up => {
                return Ok(Some(Ended::Lost {
                    reason: format!(
                        "the backend could not be reached for {} s",
                        window.as_secs()
                    ),
                    gone: false,
                }))
            }
            Err(_) => {}
        }
    }
}

/// Copies the log into the store, restarting the stream from the stored position when it
/// breaks, until it ends with the container or `done` is cancelled.
async fn pump_logs(
    r: Runner,
    backend: Arc<dyn Backend>,
    handle: RunHandle,
    run: RunRow,
    redactor: Redactor,
    done: CancellationToken,
) {
    let store = &r.inner.ctx.store;
    loop {
        let pos = match store.run(&run.id).await {
            Ok(now) => Position {
                bytes: now.log_bytes,
                mark: now.log_mark,
            },
            Err(e) => {
                tracing::warn!(error = %e, "could not read the log position");
                Position {
                    bytes: run.log_bytes,
                    mark: run.log_mark.clone(),
                }
            }
        };
        let pump = Pump {
            store,
            backend: &backend,
            handle: &handle,
            run_id: &run.id,
            attempt: run.attempt,
            redactor: &redactor,
            cap: r.inner.config.log_cap_bytes,
            owner: &r.inner.owner,
        };
        let result = tokio::select! {
            res = pump.run(pos) => res,
            _ = done.cancelled() => return,
        };
        match result {
            Ok(()) => return,
            Err(PumpError::Store(StoreError::Fenced)) => {
                tracing::warn!("another replica took the run over; this one stops storing its log");
                return;
            }
            Err(PumpError::Backend(e)) => tracing::debug!(error = %e, "log stream broke; resuming"),
            Err(PumpError::Store(e)) => {
                tracing::warn!(error = %e, "could not store log lines; retrying")
            }
        }
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Records the end of the attempt — a final status, or the next attempt — and removes what
/// the run created on its backend. The end is first kept on the attempt, then the
/// container (service, secrets, Job) is removed, and only then is the run reported final:
/// a caller that sees a final status finds nothing of the run left running, and an engine
/// that stops in between finds the end on the attempt ([`settle_kept_end`]) rather than
/// losing it. A run whose backend cannot be reached keeps its container for the sweep.
async fn record(
    r: &Runner,
    run: &RunRow,
    ended: Ended,
    container: Option<(&Arc<dyn Backend>, &RunHandle)>,
) -> anyhow::Result<()> {
    let store = &r.inner.ctx.store;
    // A supervisor whose lease another replica took over (it was too slow to renew it)
    // leaves the end to that replica, which stores the log and removes the container.
    let now = store.run(&run.id).await?;
    if !now.status.is_final() && now.lease_owner.as_deref() != Some(r.inner.owner.as_str()) {
        tracing::warn!("another replica supervises the run now; leaving its end to it");
        return Ok(());
    }
    let gone = !matches!(ended, Ended::Lost { gone: false, .. });
    let (status, mut outcome) = classify(run, ended);
    outcome.finished_at.get_or_insert_with(now_ms);
    append_cap_notice(r, run).await?;
    if let (Some((backend, handle)), true) = (container, gone) {
        let mut tx = store.begin_write().await?;
        runs::note_attempt_end(&mut tx, &run.id, run.attempt, status, &outcome).await?;
        tx.commit().await.map_err(StoreError::from)?;
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
async fn settle_kept_end(
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
    let recorded = if retry {
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
    } else {
        runs::finish(&mut tx, &run.id, run.attempt, status, &outcome, gone).await?
    };
    // The end-of-run anomalies are decided with the end itself, so that neither is
    // recorded without the other.
    let raised = match recorded && !retry {
        true => crate::monitor::after_finish(&mut tx, run, status, &outcome).await?,
        false => Vec::new(),
    };
    tx.commit().await.map_err(StoreError::from)?;
    if recorded {
        r.observe_settled(run, status, retry).await;
        r.inner.run_ended.notify_waiters();
        tracing::info!(status = %status, retry, exit_code = ?outcome.exit_code, "attempt ended");
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
async fn append_cap_notice(r: &Runner, run: &RunRow) -> Result<(), StoreError> {
    let now = r.inner.ctx.store.run(&run.id).await?;
    if now.log_dropped == 0 {
        return Ok(());
    }
    let line = crate::store::logs::NewLine {
        attempt: run.attempt,
        ts: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        stream: "jobdock",
        line: format!(
            "log capped at {} MiB: {} further bytes of output were dropped",
            r.inner.config.log_cap_bytes / (1024 * 1024),
            now.log_dropped
        ),
    };
    let totals = crate::store::logs::BatchTotals {
        dropped: -now.log_dropped,
        ..Default::default()
    };
    r.inner
        .ctx
        .store
        .append_logs(&run.id, &[line], totals)
        .await
}
