//! Where a container stands, waiting for it to end, and stopping it.
//!
//! Docker reports state through `inspect`; `wait` blocks on the daemon and then inspects
//! again for what the wait response lacks (OOM kill, timestamps).

use std::pin::pin;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerState, ContainerStateStatusEnum as Status};
use bollard::query_parameters::{StopContainerOptionsBuilder, WaitContainerOptionsBuilder};
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::errors::{for_handle, is_not_found};
use crate::{BackendError, Exit, RunHandle, TaskState};

/// What [`Exit::reason`] says for a container the kernel killed for memory.
pub(crate) const OOM_REASON: &str = "killed by the kernel: out of memory";

/// How often `wait` looks again at a container that was created but not started yet.
const CREATED_POLL: Duration = Duration::from_millis(250);

/// Parses one of Docker's timestamps; Docker's zero time (`0001-01-01T00:00:00Z`, "never")
/// and anything unparsable are `None`.
pub(crate) fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}

/// How an ended container ended, from its inspected state.
pub(crate) fn exit_of(state: &ContainerState) -> Exit {
    let oom_killed = state.oom_killed.unwrap_or(false);
    let error = state.error.as_deref().filter(|e| !e.is_empty());
    let started_at = parse_time(state.started_at.as_deref());
    // For a container that exits at once, Docker can stamp FinishedAt a little before
    // StartedAt (the two come from different parts of the daemon); never report a run that
    // ended before it began.
    let finished_at = match (started_at, parse_time(state.finished_at.as_deref())) {
        (Some(s), Some(f)) if f < s => Some(s),
        (_, f) => f,
    };
    Exit {
        exit_code: state.exit_code,
        oom_killed,
        deadline_exceeded: false,
        started_at,
        finished_at,
        reason: if oom_killed {
            Some(OOM_REASON.to_owned())
        } else {
            error.map(str::to_owned)
        },
    }
}

/// The backend-neutral state of an inspected container.
pub(crate) fn task_state_of(state: &ContainerState) -> TaskState {
    match state.status {
        Some(Status::CREATED) | Some(Status::EMPTY) | None => TaskState::Pending { reason: None },
        Some(Status::RUNNING) | Some(Status::PAUSED) | Some(Status::RESTARTING) => {
            TaskState::Running {
                started_at: parse_time(state.started_at.as_deref()),
            }
        }
        // `stopping` still runs (it got its signal); the others have ended.
        Some(Status::STOPPING) => TaskState::Running {
            started_at: parse_time(state.started_at.as_deref()),
        },
        Some(Status::EXITED) | Some(Status::DEAD) | Some(Status::REMOVING) => {
            TaskState::Exited(exit_of(state))
        }
    }
}

/// Inspects the container; `Ok(None)` when it does not exist.
pub(crate) async fn inspect_state(
    docker: &Docker,
    handle: &RunHandle,
) -> Result<Option<ContainerState>, BackendError> {
    match docker.inspect_container(&handle.backend_ref, None).await {
        Ok(info) => Ok(Some(info.state.unwrap_or_default())),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(for_handle(e, handle)),
    }
}

/// [`crate::Backend::state`].
pub(crate) async fn state(docker: &Docker, handle: &RunHandle) -> Result<TaskState, BackendError> {
    Ok(match inspect_state(docker, handle).await? {
        Some(s) => task_state_of(&s),
        None => TaskState::NotFound,
    })
}

/// Blocks until the container is not running and returns the exit code the daemon gave.
async fn wait_not_running(docker: &Docker, handle: &RunHandle) -> Result<i64, BackendError> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut responses = pin!(docker.wait_container(&handle.backend_ref, Some(options)));
    match responses.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard reports a non-zero exit as an error; it is an answer for us.
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(for_handle(e, handle)),
        None => Err(BackendError::Api {
            status: None,
            message: format!("wait on {} ended without a status", handle.backend_ref),
            source: None,
        }),
    }
}

/// [`crate::Backend::wait`].
pub(crate) async fn wait(docker: &Docker, handle: &RunHandle) -> Result<Exit, BackendError> {
    loop {
        let code = wait_not_running(docker, handle).await?;
        let Some(state) = inspect_state(docker, handle).await? else {
            // Removed between the wait and the inspect: the code is all we know.
            return Ok(Exit {
                exit_code: Some(code),
                oom_killed: false,
                deadline_exceeded: false,
                started_at: None,
                finished_at: None,
                reason: None,
            });
        };
        // `not-running` answers at once for a container that was never started (a launch
        // interrupted between create and start): it has not ended, so keep waiting.
        if matches!(state.status, Some(Status::CREATED)) {
            tokio::time::sleep(CREATED_POLL).await;
            continue;
        }
        let mut exit = exit_of(&state);
        exit.exit_code = exit.exit_code.or(Some(code));
        if exit.exit_code == Some(137) && !exit.oom_killed {
            exit = settle_oom(docker, handle, exit).await;
        }
        return Ok(exit);
    }
}

/// The daemon learns of an OOM kill from a cgroup event that can arrive after it has
/// recorded the exit (seen on a busy machine: exit 137 with `OOMKilled` still false, even a
/// second later). A SIGKILL-ed container is looked at again for a while, and its `oom`
/// event asked of the daemon's event log, before its exit is taken as final.
async fn settle_oom(docker: &Docker, handle: &RunHandle, exit: Exit) -> Exit {
    for _ in 0..15 {
        if oom_event_seen(docker, handle, &exit).await {
            return Exit {
                oom_killed: true,
                reason: Some("killed by the kernel: out of memory".into()),
                ..exit
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        match inspect_state(docker, handle).await {
            Ok(Some(state)) if state.oom_killed == Some(true) => {
                let mut again = exit_of(&state);
                again.exit_code = again.exit_code.or(exit.exit_code);
                return again;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    exit
}

/// Whether the daemon's event log holds an `oom` event of the container between its start
/// and now.
async fn oom_event_seen(docker: &Docker, handle: &RunHandle, exit: &Exit) -> bool {
    // Up to now, not later: the daemon holds the stream open until `until` has passed.
    let stamp = |t: chrono::DateTime<chrono::Utc>| {
        format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos())
    };
    let since = exit
        .started_at
        .map_or("0".to_owned(), |t| stamp(t - chrono::Duration::seconds(1)));
    let until = stamp(chrono::Utc::now());
    let filters = std::collections::HashMap::from([
        ("container", vec![handle.backend_ref.as_str()]),
        ("event", vec!["oom"]),
    ]);
    let options = bollard::query_parameters::EventsOptionsBuilder::new()
        .since(&since)
        .until(&until)
        .filters(&filters)
        .build();
    let mut events = pin!(docker.events(Some(options)));
    let look = async {
        while let Some(e) = events.next().await {
            if e.is_ok_and(|e| e.action.as_deref() == Some("oom")) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(2), look)
        .await
        .unwrap_or(false)
}

/// [`crate::Backend::stop`]: SIGTERM, SIGKILL after `grace`, and return once it has stopped.
pub(crate) async fn stop(
    docker: &Docker,
    handle: &RunHandle,
    grace: Duration,
) -> Result<(), BackendError> {
    let seconds = i32::try_from(grace.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX);
    let options = StopContainerOptionsBuilder::new().t(seconds).build();
    // The daemon answers only once the container is down, which can take the whole grace:
    // the client's request timeout must outlast it.
    let patient = docker
        .clone()
        .with_timeout(docker.timeout().max(grace + Duration::from_secs(60)));
    match patient
        .stop_container(&handle.backend_ref, Some(options))
        .await
    {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(for_handle(e, handle)),
    }
    // Docker's stop already waits for the exit; make sure of it, cheaply.
    match wait_not_running(docker, handle).await {
        Ok(_) => Ok(()),
        Err(BackendError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: Status) -> ContainerState {
        ContainerState {
            status: Some(status),
            started_at: Some("2024-05-01T10:00:00.123456789Z".into()),
            finished_at: Some("0001-01-01T00:00:00Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn zero_time_means_never() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(parse_time(None), None);
        let t = parse_time(Some("2024-05-01T10:00:00.123456789Z")).unwrap();
        assert_eq!(t.timestamp_subsec_nanos(), 123_456_789);
    }

    #[test]
    fn maps_docker_states() {
        assert_eq!(
            task_state_of(&state(Status::CREATED)),
            TaskState::Pending { reason: None }
        );
        assert!(matches!(
            task_state_of(&state(Status::RUNNING)),
            TaskState::Running {
                started_at: Some(_)
            }
        ));
        let mut exited = state(Status::EXITED);
        exited.exit_code = Some(137);
        exited.oom_killed = Some(true);
        exited.finished_at = Some("2024-05-01T10:00:05Z".into());
        match task_state_of(&exited) {
            TaskState::Exited(exit) => {
                assert_eq!(exit.exit_code, Some(137));
                assert!(exit.oom_killed);
                assert_eq!(exit.reason.as_deref(), Some(OOM_REASON));
                assert!(exit.finished_at > exit.started_at);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn keeps_the_daemons_error_as_reason() {
        let mut s = state(Status::EXITED);
        s.exit_code = Some(127);
        s.error = Some("exec: \"nope\": executable file not found".into());
        assert_eq!(exit_of(&s).reason.as_deref(), s.error.as_deref());
    }
}
