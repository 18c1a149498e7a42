//! Where a run stands, read from its service's task, and waiting for it to end.
//!
//! Swarm reports a task's state, exit code and error, but no OOM flag and no start time once
//! it has ended. When the task ran on the node we talk to, its container is inspected for
//! both; on another node of a multi-node swarm an OOM kill shows only as exit 137.

use std::collections::HashMap;
use std::pin::pin;
use std::time::Duration;

use bollard::models::{Task, TaskState as SwarmState};
use bollard::query_parameters::{ListTasksOptionsBuilder, WaitContainerOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;

use crate::docker::errors::{from_docker, is_not_found};
use crate::docker::status::{exit_of as container_exit, parse_time};
use crate::{BackendError, Exit, RunHandle, TaskState};

/// How often `wait` looks at a task that is not running on our node yet.
const POLL: Duration = Duration::from_millis(200);

/// The longest pause between two looks at a task that takes long to start.
const MAX_POLL: Duration = Duration::from_secs(2);

/// The run's service and its task, as far as the swarm knows them.
pub(crate) struct Found {
    /// The newest task of the service; `None` until the swarm has created it.
    pub(crate) task: Option<Task>,
}

/// The service's task, `Ok(None)` when the service does not exist.
pub(crate) async fn find(
    docker: &Docker,
    handle: &RunHandle,
) -> Result<Option<Found>, BackendError> {
    match docker.inspect_service(&handle.backend_ref, None).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(from_docker(e)),
    }
    let filters = HashMap::from([("service", vec![handle.backend_ref.clone()])]);
    let options = ListTasksOptionsBuilder::new().filters(&filters).build();
    let tasks = docker
        .list_tasks(Some(options))
        .await
        .map_err(from_docker)?;
    // One task per attempt (restart condition none); should there be more, the newest counts.
    let task = tasks
        .into_iter()
        .max_by_key(|t| t.version.as_ref().and_then(|v| v.index));
    Ok(Some(Found { task }))
}

/// The task's state, `NEW` when it has none yet.
fn state_of(task: &Task) -> SwarmState {
    task.status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(SwarmState::NEW)
}

/// Whether the task has ended for good.
pub(crate) fn is_final(task: &Task) -> bool {
    matches!(
        state_of(task),
        SwarmState::COMPLETE
            | SwarmState::FAILED
            | SwarmState::REJECTED
            | SwarmState::SHUTDOWN
            | SwarmState::REMOVE
            | SwarmState::ORPHANED
    )
}

/// Whether the task's container runs.
fn is_running(task: &Task) -> bool {
    state_of(task) == SwarmState::RUNNING
}

/// The task's container id, once it has one.
pub(crate) fn container_of(task: &Task) -> Option<&str> {
    task.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.as_deref())
        .filter(|id| !id.is_empty())
}

/// The swarm's error for the task, without the one that merely restates a non-zero exit.
fn error_of(task: &Task) -> Option<&str> {
    let err = task.status.as_ref()?.err.as_deref()?.trim();
    (!err.is_empty() && !err.starts_with("task: non-zero exit")).then_some(err)
}

/// Why a task ended without (or besides) an exit code, in words.
fn reason_of(task: &Task) -> Option<String> {
    let err = error_of(task);
    match state_of(task) {
        SwarmState::REJECTED => Some(match err {
            Some(e) if e.contains("No such image") || e.contains("pull") => {
                format!("the image could not be pulled: {e}")
            }
            Some(e) => format!("rejected by the swarm: {e}"),
            None => "rejected by the swarm".to_owned(),
        }),
        SwarmState::ORPHANED => Some("its node left the swarm (orphaned)".to_owned()),
        SwarmState::SHUTDOWN | SwarmState::REMOVE if container_of(task).is_none() => {
            Some("shut down by the swarm before it started".to_owned())
        }
        _ => err.map(str::to_owned),
    }
}

/// How an ended task ended, as far as the task says.
fn task_exit(task: &Task) -> Exit {
    let status = task.status.as_ref();
    let exit_code = container_of(task)
        .and(status.and_then(|s| s.container_status.as_ref()))
        .and_then(|c| c.exit_code);
    Exit {
        exit_code,
        oom_killed: false,
        deadline_exceeded: false,
        started_at: None,
        finished_at: parse_time(status.and_then(|s| s.timestamp.as_deref())),
        reason: reason_of(task),
    }
}

/// How an ended task ended: the task's account, completed from its container when that is
/// on our node (the OOM flag and exact times exist only there).
pub(crate) async fn exit_of(docker: &Docker, task: &Task) -> Result<Exit, BackendError> {
    let mut exit = task_exit(task);
    let Some(id) = container_of(task) else {
        return Ok(exit);
    };
    let state = match docker.inspect_container(id, None).await {
        Ok(info) => info.state.unwrap_or_default(),
        // On another node, or already removed by the swarm.
        Err(e) if is_not_found(&e) => return Ok(exit),
        Err(e) => return Err(from_docker(e)),
    };
    let local = container_exit(&state);
    exit.oom_killed = local.oom_killed;
    exit.started_at = local.started_at;
    exit.finished_at = local.finished_at.or(exit.finished_at);
    if local.oom_killed {
        exit.reason = local.reason;
    }
    exit.exit_code = exit.exit_code.or(local.exit_code);
    Ok(exit)
}

/// The backend-neutral state of a service's task.
pub(crate) async fn task_state(
    docker: &Docker,
    task: Option<&Task>,
) -> Result<TaskState, BackendError> {
    let Some(task) = task else {
        return Ok(TaskState::Pending { reason: None });
    };
    if is_final(task) {
        return Ok(TaskState::Exited(exit_of(docker, task).await?));
    }
    let since = parse_time(task.status.as_ref().and_then(|s| s.timestamp.as_deref()));
    Ok(match state_of(task) {
        SwarmState::RUNNING => TaskState::Running { started_at: since },
        // Swarm keeps retrying a task it cannot place (no node fits, image not there yet);
        // its error says why, and the engine's timeout decides how long that may last.
        _ => TaskState::Pending {
            reason: error_of(task).map(|e| format!("not started yet: {e}")),
        },
    })
}

/// [`crate::Backend::state`].
pub(crate) async fn state(docker: &Docker, handle: &RunHandle) -> Result<TaskState, BackendError> {
    match find(docker, handle).await? {
        Some(found) => task_state(docker, found.task.as_ref()).await,
        None => Ok(TaskState::NotFound),
    }
}

/// The error for a service the swarm does not know.
pub(crate) fn not_found(handle: &RunHandle) -> BackendError {
    BackendError::NotFound(format!(
        "service {} of run {} attempt {}",
        handle.backend_ref, handle.run_id, handle.attempt
    ))
}

/// [`crate::Backend::wait`]: blocks on the container while it runs on our node, and polls
/// the task otherwise (Swarm has no wait call for tasks).
pub(crate) async fn wait(docker: &Docker, handle: &RunHandle) -> Result<Exit, BackendError> {
    let mut pause = POLL;
    loop {
        let found = find(docker, handle)
            .await?
            .ok_or_else(|| not_found(handle))?;
        if let Some(task) = found.task.as_ref() {
            if is_final(task) {
                return exit_of(docker, task).await;
            }
            if is_running(task) {
                if let Some(id) = container_of(task) {
                    wait_container(docker, id).await?;
                    // The agent reports the end a moment after the container's exit.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(MAX_POLL);
    }
}

/// Blocks until the local container `id` is not running; returns at once for a container on
/// another node (unknown here), after a pause so that the caller's poll does not spin.
async fn wait_container(docker: &Docker, id: &str) -> Result<(), BackendError> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut responses = pin!(docker.wait_container(id, Some(options)));
    match responses.next().await {
        Some(Err(e)) if is_not_found(&e) => {
            tokio::time::sleep(POLL).await;
            Ok(())
        }
        // A non-zero exit is an error for bollard, an answer for us.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) | Some(Ok(_)) | None => {
            Ok(())
        }
        Some(Err(e)) => Err(from_docker(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerStatus, TaskStatus};

    fn task(state: SwarmState, err: Option<&str>, container: &str, code: i64) -> Task {
        Task {
            status: Some(TaskStatus {
                timestamp: Some("2024-05-01T10:00:05.5Z".into()),
                state: Some(state),
                err: err.map(str::to_owned),
                container_status: Some(ContainerStatus {
                    container_id: Some(container.into()),
                    exit_code: Some(code),
                    pid: Some(0),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_exit_has_its_code_and_no_reason() {
        let t = task(SwarmState::FAILED, Some("task: non-zero exit (3)"), "c1", 3);
        assert!(is_final(&t));
        let exit = task_exit(&t);
        assert_eq!(exit.exit_code, Some(3));
        assert_eq!(exit.reason, None);
        assert!(exit.finished_at.is_some());
    }

    #[test]
    fn a_rejected_task_says_why_and_has_no_code() {
        let t = task(SwarmState::REJECTED, Some("No such image: x:1"), "", 0);
        let exit = task_exit(&t);
        assert_eq!(exit.exit_code, None);
        let reason = exit.reason.unwrap();
        assert!(
            reason.contains("could not be pulled") && reason.contains("x:1"),
            "{reason}"
        );
    }

    #[test]
    fn pending_and_running_are_not_final() {
        for state in [
            SwarmState::PENDING,
            SwarmState::PREPARING,
            SwarmState::RUNNING,
        ] {
            assert!(!is_final(&task(state, None, "", 0)));
        }
        let stuck = task(SwarmState::PENDING, Some("no suitable node"), "", 0);
        assert_eq!(error_of(&stuck), Some("no suitable node"));
    }
}
