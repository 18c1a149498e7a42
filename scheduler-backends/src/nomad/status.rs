//! Where a run stands, from its job's newest allocation; waiting for its end; stopping it.
//!
//! Nomad reports a task's life as events: `Terminated` carries the exit code and whether
//! the kernel killed it for memory; `Driver Failure` (a failed image pull, for instance)
//! or `Failed Validation` end it before it ran, and their words become the exit's reason.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::api::{parse_time, Allocation, JobInfo, TaskEvent};
use super::client::{escape, Client};
use super::errors::{for_handle, from_nomad, NomadError};
use super::jobspec::TASK;
use crate::{BackendError, Exit, RunHandle, TaskState};

/// What [`Exit::reason`] says for a task the kernel killed for memory.
pub(crate) const OOM_REASON: &str = "killed by the kernel: out of memory";

/// Events that end a task before (or instead of) its process running.
const FAILURE_EVENTS: [&str; 5] = [
    "Driver Failure",
    "Failed Validation",
    "Setup Failure",
    "Failed Artifact Download",
    "Task hook failed",
];

/// How long a blocking query waits for a change before answering anyway.
const BLOCKING_WAIT: &str = "30s";

/// The shortest pause between two looks, should an agent (or proxy) answer at once.
const MIN_POLL: Duration = Duration::from_millis(100);

/// The job's allocations and the index to block on for the next change.
async fn allocations(
    client: &Client,
    handle: &RunHandle,
    index: Option<u64>,
) -> Result<(Vec<Allocation>, u64), NomadError> {
    let path = format!("/v1/job/{}/allocations", escape(&handle.backend_ref));
    let mut req = client.request(Method::GET, &path);
    if let Some(index) = index {
        req = req.query(&[
            ("index", index.to_string().as_str()),
            ("wait", BLOCKING_WAIT),
        ]);
    }
    let resp = Client::send(req).await?;
    let next = resp
        .headers()
        .get("X-Nomad-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let allocs = resp.json().await.map_err(NomadError::Decode)?;
    Ok((allocs, next))
}

/// The newest allocation: with rescheduling off there is normally only one.
fn newest(allocs: Vec<Allocation>) -> Option<Allocation> {
    allocs.into_iter().max_by_key(|a| a.create_index)
}

/// The run's newest allocation, `None` while none is placed; a job Nomad does not know is
/// [`BackendError::NotFound`].
pub(crate) async fn current(
    client: &Client,
    handle: &RunHandle,
) -> Result<Option<Allocation>, BackendError> {
    match allocations(client, handle, None).await {
        Ok((allocs, _)) => Ok(newest(allocs)),
        Err(e) => Err(for_handle(e, handle)),
    }
}

/// The state of a job without allocations: unknown, stopped before placement, or waiting.
async fn unplaced(client: &Client, handle: &RunHandle) -> Result<TaskState, BackendError> {
    let path = format!("/v1/job/{}", escape(&handle.backend_ref));
    match client.get::<JobInfo>(&path, &[]).await {
        Ok(job) if job.stop => Ok(TaskState::Exited(Exit {
            reason: Some("stopped before it was placed".into()),
            ..empty_exit()
        })),
        Ok(_) => Ok(TaskState::Pending {
            reason: Some("waiting for placement".into()),
        }),
        Err(e) if e.status() == Some(404) => Ok(TaskState::NotFound),
        Err(e) => Err(from_nomad(e)),
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

/// [`crate::Backend::state`].
pub(crate) async fn state(client: &Client, handle: &RunHandle) -> Result<TaskState, BackendError> {
    match current(client, handle).await {
        Ok(Some(alloc)) => Ok(task_state_of(&alloc)),
        Ok(None) | Err(BackendError::NotFound(_)) => unplaced(client, handle).await,
        Err(e) => Err(e),
    }
}

/// The backend-neutral state of an allocation.
pub(crate) fn task_state_of(alloc: &Allocation) -> TaskState {
    let task = alloc.task_states.as_ref().and_then(|t| t.get(TASK));
    match alloc.client_status.as_str() {
        "running" => TaskState::Running {
            started_at: task.and_then(|t| parse_time(t.started_at.as_deref())),
        },
        "complete" | "failed" | "lost" => TaskState::Exited(exit_of(alloc)),
        "pending" => TaskState::Pending {
            reason: events(alloc)
                .last()
                .and_then(|e| e.message().map(str::to_owned)),
        },
        other => TaskState::Pending {
            reason: Some(format!("allocation {other}: {}", alloc.client_description)),
        },
    }
}

fn events(alloc: &Allocation) -> &[TaskEvent] {
    alloc
        .task_states
        .as_ref()
        .and_then(|t| t.get(TASK))
        .and_then(|t| t.events.as_deref())
        .unwrap_or_default()
}

/// How a terminal allocation's task ended.
pub(crate) fn exit_of(alloc: &Allocation) -> Exit {
    let events = events(alloc);
    let terminated = events.iter().rev().find(|e| e.kind == "Terminated");
    let failure = events
        .iter()
        .rev()
        .find(|e| FAILURE_EVENTS.contains(&e.kind.as_str()));
    let exit_code = terminated.map(|e| match (e.exit_code, e.signal) {
        (0, signal) if signal > 0 => 128 + signal,
        (code, _) => code,
    });
    let oom_killed = terminated
        .and_then(|e| e.details.as_ref())
        .and_then(|d| d.get("oom_killed"))
        .is_some_and(|v| v == "true");
    let reason = if oom_killed {
        Some(OOM_REASON.to_owned())
    } else if let Some(f) = failure {
        Some(format!(
            "{}: {}",
            f.kind,
            f.message().unwrap_or("no details")
        ))
    } else if alloc.client_status == "lost" {
        Some(format!("allocation lost: {}", alloc.client_description))
    } else {
        None
    };
    let task = alloc.task_states.as_ref().and_then(|t| t.get(TASK));
    let started_at = task.and_then(|t| parse_time(t.started_at.as_deref()));
    let finished_at = match (
        started_at,
        task.and_then(|t| parse_time(t.finished_at.as_deref())),
    ) {
        (Some(s), Some(f)) if f < s => Some(s),
        (_, f) => f,
    };
    Exit {
        exit_code,
        oom_killed,
        deadline_exceeded: false,
        started_at,
        finished_at,
        reason,
    }
}

/// [`crate::Backend::wait`]: blocking queries on the job's allocations until the newest one
/// is terminal.
pub(crate) async fn wait(client: &Client, handle: &RunHandle) -> Result<Exit, BackendError> {
    let mut index = None;
    loop {
        let (allocs, next) = allocations(client, handle, index)
            .await
            .map_err(|e| for_handle(e, handle))?;
        match newest(allocs) {
            Some(alloc) if alloc.is_terminal() => return Ok(exit_of(&alloc)),
            Some(_) => {}
            None => match unplaced(client, handle).await? {
                TaskState::NotFound => return Err(super::errors::not_found(handle)),
                TaskState::Exited(exit) => return Ok(exit),
                _ => {}
            },
        }
        if index == Some(next) || next == 0 {
            tokio::time::sleep(MIN_POLL).await;
        }
        index = Some(next);
    }
}

/// Polls until the newest allocation is terminal (or there is none), for at most `limit`.
/// Returns whether it is.
async fn terminal_within(
    client: &Client,
    handle: &RunHandle,
    limit: Duration,
) -> Result<bool, BackendError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match current(client, handle).await {
            Ok(Some(a)) if !a.is_terminal() => {}
            Ok(_) | Err(BackendError::NotFound(_)) => return Ok(true),
            Err(e) => return Err(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(MIN_POLL).await;
    }
}

/// Sends `signal` to the task; a task that is not running (any more) is not an error.
async fn signal(client: &Client, alloc_id: &str, signal: &str) -> Result<(), BackendError> {
    let path = format!("/v1/client/allocation/{}/signal", escape(alloc_id));
    let body = json!({ "Signal": signal, "Task": TASK });
    match client.send_json(Method::POST, &path, &body).await {
        Ok(()) => Ok(()),
        Err(NomadError::Status { status, message })
            if status < 500 || message.contains("not running") =>
        {
            tracing::debug!(status, %message, "signal not delivered");
            Ok(())
        }
        Err(e) => Err(from_nomad(e)),
    }
}

/// [`crate::Backend::stop`]. Nomad's `KillTimeout` is fixed when the job is registered, so
/// the grace given here is applied with signals: SIGTERM, SIGKILL once `grace` is over,
/// then the job is deregistered (not purged: its allocation and logs stay readable until
/// cleanup) so that Nomad never places it again, and we wait for the allocation's end.
pub(crate) async fn stop(
    client: &Client,
    handle: &RunHandle,
    grace: Duration,
) -> Result<(), BackendError> {
    let alloc = match current(client, handle).await {
        Ok(alloc) => alloc,
        Err(BackendError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    if let Some(alloc) = alloc.filter(|a| a.client_status == "running") {
        signal(client, &alloc.id, "SIGTERM").await?;
        if !terminal_within(client, handle, grace).await? {
            tracing::info!(alloc = %alloc.id, "grace over; killing the task");
            signal(client, &alloc.id, "SIGKILL").await?;
        }
    }
    let path = format!("/v1/job/{}", escape(&handle.backend_ref));
    client.delete(&path, &[]).await.map_err(from_nomad)?;
    // Nomad's own kill (KillTimeout) bounds this for a task that was still pending.
    while !terminal_within(client, handle, Duration::from_secs(60)).await? {
        tracing::warn!(job_id = %handle.backend_ref, "allocation still not terminal after stop");
    }
    Ok(())
}
