//! The shapes of Nomad's answers that the backend reads, as far as it reads them.
//!
//! Nomad writes its fields in Go's `PascalCase`; everything not listed here is ignored, and
//! everything listed is optional or defaulted so that older or newer agents still parse.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// One allocation of a job (`GET /v1/job/:id/allocations`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct Allocation {
    /// The allocation's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// `pending`, `running`, `complete`, `failed`, `lost` or `unknown`.
    pub client_status: String,
    /// What the client said about the status.
    pub client_description: String,
    /// Raft index of its creation: the newest allocation has the highest.
    pub create_index: u64,
    /// Per task.
    pub task_states: Option<BTreeMap<String, TaskStateInfo>>,
}

impl Allocation {
    /// Whether the allocation has ended for good.
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self.client_status.as_str(), "complete" | "failed" | "lost")
    }
}

/// A task's state in an allocation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct TaskStateInfo {
    /// `pending`, `running` or `dead`.
    pub state: String,
    /// When it started; Go's zero time when it never did.
    pub started_at: Option<String>,
    /// When it finished; Go's zero time while it runs.
    pub finished_at: Option<String>,
    /// What happened to it, oldest first.
    pub events: Option<Vec<TaskEvent>>,
}

/// One event in a task's life.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct TaskEvent {
    /// `Received`, `Started`, `Terminated`, `Driver Failure`, `Failed Validation`, ...
    #[serde(rename = "Type")]
    pub kind: String,
    /// The exit code of a `Terminated` event.
    pub exit_code: i64,
    /// The signal that ended the process, 0 if none.
    pub signal: i64,
    /// The driver's error of a `Driver Failure`.
    pub driver_error: String,
    /// The error of a `Failed Validation`.
    pub validation_error: String,
    /// The error of a `Setup Failure`.
    pub setup_error: String,
    /// A human-readable summary.
    pub display_message: String,
    /// Event details as strings, e.g. `oom_killed`.
    pub details: Option<BTreeMap<String, String>>,
}

impl TaskEvent {
    /// The event's own error words, the most specific first.
    pub(crate) fn message(&self) -> Option<&str> {
        [
            &self.driver_error,
            &self.validation_error,
            &self.setup_error,
            &self.display_message,
        ]
        .into_iter()
        .map(String::as_str)
        .find(|m| !m.is_empty())
    }
}

/// A job as listed by `GET /v1/jobs?meta=true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct JobStub {
    /// The job's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The job's meta (Nomad ≥ 1.6 lists it when asked).
    pub meta: Option<BTreeMap<String, String>>,
}

/// The part of a job read back when adopting it (`GET /v1/job/:id`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct JobInfo {
    /// The job's meta: our identity labels.
    pub meta: Option<BTreeMap<String, String>>,
    /// Set once the job has been stopped (deregistered without purge).
    pub stop: bool,
}

/// One entry of `GET /v1/client/fs/ls/:alloc`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct AllocFileInfo {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One frame of a log stream; a heartbeat is an empty object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct StreamFrame {
    /// The base64 bytes of output.
    pub data: String,
    /// The file the bytes were read from (logs rotate into `<task>.stdout.<n>`).
    pub file: String,
    /// Where in that file the bytes were read from.
    pub offset: i64,
}

/// Parses one of Nomad's timestamps; Go's zero time ("never") and garbage are `None`.
pub(crate) fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}
