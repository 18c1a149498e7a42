//! One task per run attempt: launch (or find again), mark running, store the log while
//! waiting for the end, enforce timeout and cancel, then record the end: once the exit
//! status and the complete log are stored, the container is removed and the run reported
//! final.

use std::sync::Arc;
use std::time::Duration;

use jobdock_backends::{Backend, BackendError, Exit, RunHandle, TaskState};
use jobdock_types::{RunEventKind, RunStatus};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::launch::launch_spec;
use super::logpump::{Position, Pump, PumpError};
use super::record::{record, settle_kept_end};
use super::redact::Redactor;
use super::Runner;
use crate::service::cancels::CancelWatch;
use crate::service::jobs::DEFAULT_STOP_GRACE_SECONDS;
use crate::store::events::NewEvent;
use crate::store::runs::{self, RunRow};
use crate::store::{now_ms, StoreError};

/// How an attempt ended, as the supervisor saw it.
#[derive(Debug)]
pub(super) enum Ended {
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

/// The variable (or file under `/run/secrets`) a run's token reaches its script by.
pub const RUN_TOKEN_VAR: &str = "JOBDOCK_RUN_TOKEN";

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

pub(super) fn millis(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
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
    // An end is kept only for an attempt whose container was launched (it has a handle):
    // a run just claimed has none, and costs no read here.
    if run.backend_ref.is_some() && settle_kept_end(r, &run, &backend).await? {
        return Ok(());
    }
    // Watched by this replica's anomaly check while this supervisor holds it; a run adopted
    // while running brings the time its output last moved.
    let last_output = match run.status {
        RunStatus::Running => ctx.store.last_output_at(&run.id).await?,
        _ => None,
    };
    let watched = r.inner.live.watch(&run, last_output);
    let mut secrets =
        crate::service::jobs::open_secrets_of(ctx, &run.job_id, &run.job_name).await?;
    // The run's own token travels as a secret: delivered as the job's secrets are (variable
    // or file) and redacted from its log like them.
    secrets.push((
        RUN_TOKEN_VAR.to_string(),
        SecretString::from(ctx.keys.run_token(&run.id, run.attempt)),
    ));
    let redactor = Redactor::new(&secrets.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
    // From here on a cancel of the run is told to this supervisor: at once when asked for
    // on this replica, and by the runner's cancel loop (within a second) when asked for on
    // another or a moment before this watch began.
    let cancels = ctx.cancels.watch(&run.id);

    let handle = match launch(r, &backend, &run, secrets).await? {
        Ok(h) => h,
        Err(ended) => return record(r, &run, ended, None).await,
    };
    let Some(started_at) = wait_until_started(r, &backend, &handle, &run, &cancels).await? else {
        return Ok(());
    };
    watched.running(started_at);
    if run.status == RunStatus::Starting {
        let mut tx = ctx.store.begin_write().await?;
        runs::mark_running(&mut tx, &run.id, run.attempt, started_at).await?;
        tx.commit().await.map_err(StoreError::from)?;
    }

    let logs_done = CancellationToken::new();
    // The first stream starts where the row read when this supervisor took the run says:
    // only the lease's holder stores the log, so nothing has moved it since.
    let from_row = Position {
        bytes: run.log_bytes,
        mark: run.log_mark.clone(),
    };
    let pump = tokio::spawn(pump_logs(
        r.clone(),
        backend.clone(),
        handle.clone(),
        run.clone(),
        redactor.clone(),
        logs_done.clone(),
        watched.output.clone(),
        Some(from_row),
    ));
    let ended = match watch(r, &backend, &handle, &run, started_at, &cancels).await {
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
            watched.output.clone(),
            None,
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
    // Looked at every 15 s, and given up after two looks without movement. The first look
    // is the first reading: most streams end well before it, and cost no read at all.
    const LOOK: Duration = Duration::from_secs(15);
    tokio::pin!(pump);
    let progress = || async { r.inner.ctx.store.log_position(run_id).await.ok() };
    let mut stored = None;
    loop {
        tokio::select! {
            _ = &mut pump => return,
            _ = tokio::time::sleep(LOOK) => {}
        }
        let now = progress().await;
        if stored.is_some() && now == stored {
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
    let run_url = r.inner.config.run_url.as_ref().and_then(|u| {
        let network = run.spec.network.as_deref();
        u.for_run(&run.backend, network)
    });
    let spec = match launch_spec(run, &r.inner.installation_id, secrets, run_url) {
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
                let message = format!(
                    "{} accepted the container in {} (image pull included)",
                    run.backend,
                    runs::seconds(took)
                );
                let event = NewEvent::new(&run.id, run.attempt, RunEventKind::Launched, message)
                    .detail(serde_json::json!({ "took_ms": took, "backend": run.backend }));
                let store = &r.inner.ctx.store;
                store
                    .record_launch(&run.id, run.attempt, &json, event)
                    .await?;
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
/// already got its end recorded (cancelled or lost before it ever ran). The backend is
/// asked again after 25 ms, then twice as long each time up to half a second: a scheduler
/// (Swarm, Kubernetes, Nomad) often starts a short job within a second, and a fixed
/// half-second pause made such a run wait for the next look long after it had ended.
async fn wait_until_started(
    r: &Runner,
    backend: &Arc<dyn Backend>,
    handle: &RunHandle,
    run: &RunRow,
    cancels: &CancelWatch,
) -> anyhow::Result<Option<i64>> {
    const FIRST: Duration = Duration::from_millis(25);
    const MOST: Duration = Duration::from_millis(500);
    let mut pause = FIRST;
    let mut cancel_told = false;
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
        if std::mem::take(&mut cancel_told) && r.inner.ctx.store.cancel_requested(&run.id).await? {
            let grace = grace(run);
            let _ = backend.stop(handle, grace).await;
            let exit = backend.wait(handle).await.unwrap_or_else(|_| empty_exit());
            record(r, run, Ended::Cancelled(exit), Some((backend, handle))).await?;
            return Ok(None);
        }
        tokio::select! {
            _ = r.inner.shutdown.cancelled() => return Ok(None),
            _ = cancels.requested() => cancel_told = true,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MOST);
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
    cancels: &CancelWatch,
) -> Result<Ended, Detach> {
    let deadline = run.spec.timeout_seconds.map(|t| {
        let at = started_at + t * 1000;
        tokio::time::Instant::now() + Duration::from_millis((at - now_ms()).max(0) as u64)
    });
    let mut stopping: Option<Stopping> = None;
    // Set when a cancel was told: the store says whether it stands.
    let mut check_now = false;
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
                _ = cancels.requested(), if stopping.is_none() && !check_now => check_now = true,
                _ = std::future::ready(()), if stopping.is_none() && check_now => {
                    check_now = false;
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

/// Copies the log into the store from `from` (the stored position when `None`), restarting
/// the stream from the stored position when it breaks, until it ends with the container or
/// `done` is cancelled.
#[allow(clippy::too_many_arguments)] // one task's whole context; a struct would be used once
async fn pump_logs(
    r: Runner,
    backend: Arc<dyn Backend>,
    handle: RunHandle,
    run: RunRow,
    redactor: Redactor,
    done: CancellationToken,
    moved: Arc<std::sync::atomic::AtomicI64>,
    mut from: Option<Position>,
) {
    let store = &r.inner.ctx.store;
    loop {
        let stored = match from.take() {
            Some(pos) => Ok((pos.bytes, pos.mark)),
            None => store.log_position(&run.id).await,
        };
        let pos = match stored {
            Ok((bytes, mark)) => Position { bytes, mark },
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
            moved: &moved,
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
