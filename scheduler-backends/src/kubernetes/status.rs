//! A run's state from its Job's conditions and its pod's container status, and waiting for
//! its end.
//!
//! Only `Complete` and `Failed` are final (`FailureTarget` and `SuccessCriteriaMet` come while
//! the pod may still run). A pod stuck on its image or unschedulable for longer than
//! `pending_timeout` counts as ended: `state` says so, and `wait` also deletes the Job.
//! Waiting polls, so a dropped connection is simply the next poll: transient errors are
//! retried, never taken as the run's end.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::Api;

use super::{errors, manifest, Kube};
use crate::{BackendError, Exit, RunHandle, TaskState};

/// Waiting reasons that mean the image will not come.
const IMAGE_FAILURES: [&str; 3] = ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"];

/// How the reason of a run ended for being stuck pending starts.
const GAVE_UP: &str = "gave up after";

/// A Kubernetes time as chrono's.
pub(crate) fn time(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        t.0.as_second(),
        u32::try_from(t.0.subsec_nanosecond()).ok()?,
    )
}

/// The newest pod of the Job, if any.
pub(crate) async fn pod_of(pods: &Api<Pod>, job: &str) -> Result<Option<Pod>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{}={job}", manifest::JOB_NAME_LABEL));
    let list = pods.list(&lp).await?;
    Ok(list
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().and_then(time)))
}

/// The pod's container terminated state, as an [`Exit`].
fn pod_exit(pod: Option<&Pod>) -> Option<Exit> {
    let status = pod?.status.as_ref()?.container_statuses.as_ref()?;
    let term = status
        .iter()
        .find(|c| c.name == manifest::CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    let reason = term.reason.clone().unwrap_or_default();
    Some(Exit {
        exit_code: Some(i64::from(term.exit_code)),
        oom_killed: reason == "OOMKilled",
        deadline_exceeded: false,
        started_at: term.started_at.as_ref().and_then(time),
        finished_at: term.finished_at.as_ref().and_then(time),
        reason: match (reason.as_str(), &term.message) {
            ("" | "Completed" | "Error", _) => None,
            (r, Some(m)) if !m.is_empty() => Some(format!("{r}: {m}")),
            (r, _) => Some(r.to_owned()),
        },
    })
}

/// Whether the pod's container has terminated.
pub(crate) fn terminated(pod: &Pod) -> bool {
    pod_exit(Some(pod)).is_some()
}

/// The Job's end, from its `Complete` or `Failed` condition, completed by the pod's exit.
fn job_exit(job: &Job, pod: Option<&Pod>) -> Option<Exit> {
    let cond = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let mut exit = pod_exit(pod).unwrap_or(Exit {
        exit_code: (cond.type_ == "Complete").then_some(0),
        oom_killed: false,
        deadline_exceeded: false,
        started_at: job.status.as_ref()?.start_time.as_ref().and_then(time),
        finished_at: cond.last_transition_time.as_ref().and_then(time),
        reason: None,
    });
    if cond.type_ == "Failed" {
        let why = cond.reason.clone().unwrap_or_else(|| "Failed".into());
        exit.deadline_exceeded = why == "DeadlineExceeded";
        if exit.reason.is_none() && (exit.exit_code.is_none() || exit.deadline_exceeded) {
            exit.reason = Some(match &cond.message {
                Some(m) => format!("{why}: {m}"),
                None => why,
            });
        }
    }
    Some(exit)
}

/// Why the pod is not running yet, and since when it has been stuck there for good.
fn pending(pod: &Pod) -> (Option<String>, Option<DateTime<Utc>>) {
    let created = pod.metadata.creation_timestamp.as_ref().and_then(time);
    let status = pod.status.as_ref();
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == manifest::CONTAINER))
        .and_then(|c| c.state.as_ref()?.waiting.as_ref());
    if let Some(w) = waiting {
        let reason = w.reason.clone().unwrap_or_default();
        let text = match &w.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason.clone(),
        };
        let stuck = IMAGE_FAILURES.contains(&reason.as_str());
        return (Some(text), created.filter(|_| stuck));
    }
    let unschedulable = status.and_then(|s| s.conditions.as_ref()).and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    });
    if let Some(c) = unschedulable {
        let reason = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
        let text = match &c.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason,
        };
        let since = c.last_transition_time.as_ref().and_then(time).or(created);
        return (Some(text), since);
    }
    (None, None)
}

/// Where a Job and its pod stand, `now`.
pub(crate) fn derive(
    job: &Job,
    pod: Option<&Pod>,
    pending_timeout: Duration,
    now: DateTime<Utc>,
) -> TaskState {
    if let Some(exit) = job_exit(job, pod) {
        return TaskState::Exited(exit);
    }
    let Some(pod) = pod else {
        return TaskState::Pending { reason: None };
    };
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == manifest::CONTAINER))
        .and_then(|c| c.state.as_ref());
    if let Some(state) = running {
        if let Some(r) = &state.running {
            return TaskState::Running {
                started_at: r.started_at.as_ref().and_then(time),
            };
        }
        if state.terminated.is_some() {
            // The Job's own condition follows shortly; it alone says whether a deadline hit.
            return TaskState::Running { started_at: None };
        }
    }
    let (reason, stuck_since) = pending(pod);
    if let (Some(why), Some(since)) = (&reason, stuck_since) {
        let limit = chrono::Duration::from_std(pending_timeout).unwrap_or(chrono::Duration::MAX);
        if now - since > limit {
            return TaskState::Exited(Exit {
                exit_code: None,
                oom_killed: false,
                deadline_exceeded: false,
                started_at: None,
                finished_at: Some(now),
                reason: Some(format!(
                    "{GAVE_UP} {}s pending: {why}",
                    pending_timeout.as_secs_f64()
                )),
            });
        }
    }
    TaskState::Pending { reason }
}

/// [`derive`] for a handle, reading the Job and its pod. A Job being deleted counts as gone:
/// `cleanup` (or the TTL) has let it go, and with foreground propagation it stays until its
/// pod has, which may take the pod's whole grace period.
pub(crate) async fn state(kube: &Kube, handle: &RunHandle) -> Result<TaskState, BackendError> {
    let job = (kube.jobs.get_opt(&handle.backend_ref).await).map_err(errors::from_kube)?;
    let Some(job) = job.filter(|j| j.metadata.deletion_timestamp.is_none()) else {
        return Ok(TaskState::NotFound);
    };
    let pod = pod_of(&kube.pods, &handle.backend_ref)
        .await
        .map_err(errors::from_kube)?;
    Ok(derive(
        &job,
        pod.as_ref(),
        kube.config.pending_timeout,
        Utc::now(),
    ))
}

/// Polls until the run has ended; transient errors are retried, not reported.
pub(crate) async fn wait(kube: &Kube, handle: &RunHandle) -> Result<Exit, BackendError> {
    loop {
        match state(kube, handle).await {
            Ok(TaskState::Exited(exit)) => {
                // Stuck pending: the pod will never run, so the Job goes now.
                if exit.exit_code.is_none()
                    && exit
                        .reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with(GAVE_UP))
                {
                    delete_job(kube, handle, DeleteParams::foreground()).await?;
                }
                return Ok(exit);
            }
            Ok(TaskState::NotFound) => return Err(errors::not_found(handle)),
            Ok(_) => {}
            Err(BackendError::Unavailable(e)) => {
                tracing::warn!(error = %e, "kubernetes unreachable while waiting; retrying");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(kube.poll).await;
    }
}

/// Deletes the Job; a Job already gone is fine.
pub(crate) async fn delete_job(
    kube: &Kube,
    handle: &RunHandle,
    dp: DeleteParams,
) -> Result<(), BackendError> {
    match kube.jobs.delete(&handle.backend_ref, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if errors::code(&e) == Some(404) => Ok(()),
        Err(e) => Err(errors::for_handle(e, handle)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn failed_with_deadline_is_deadline_exceeded() {
        let j = job(
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]),
        );
        let TaskState::Exited(exit) = derive(&j, None, Duration::from_secs(60), Utc::now()) else {
            panic!()
        };
        assert!(exit.deadline_exceeded);
        assert_eq!(exit.exit_code, None);
        assert!(exit.reason.unwrap().starts_with("DeadlineExceeded"));
    }

    #[test]
    fn failure_target_is_not_final() {
        let j = job(
            json!([{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"}]),
        );
        let p = pod(
            json!({"containerStatuses": [{"name": "job", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3}}}]}),
        );
        assert!(matches!(
            derive(&j, Some(&p), Duration::from_secs(60), Utc::now()),
            TaskState::Running { .. }
        ));
    }

    #[test]
    fn image_pull_backoff_pends_then_gives_up() {
        let j = job(json!([]));
        let p = pod(
            json!({"containerStatuses": [{"name": "job", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}),
        );
        let created: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let early = derive(
            &j,
            Some(&p),
            Duration::from_secs(60),
            created + chrono::Duration::seconds(30),
        );
        assert_eq!(
            early,
            TaskState::Pending {
                reason: Some("ImagePullBackOff: Back-off pulling image".into())
            }
        );
        let late = derive(
            &j,
            Some(&p),
            Duration::from_secs(60),
            created + chrono::Duration::seconds(61),
        );
        let TaskState::Exited(exit) = late else {
            panic!("{late:?}")
        };
        assert!(exit.reason.unwrap().contains("ImagePullBackOff"));
    }
}
