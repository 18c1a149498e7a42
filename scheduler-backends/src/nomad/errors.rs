//! Nomad's failures and how they become [`BackendError`]s.
//!
//! The HTTP status is kept so that callers can tell a 404 or a 409 apart, and transport
//! failures become [`BackendError::Unavailable`] so the engine retries them.

use crate::{BackendError, RunHandle};

/// What went wrong talking to Nomad.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NomadError {
    /// No answer: connection refused or reset, timeout, a stream cut short.
    #[error("nomad unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    /// Nomad answered with an error status; its body is the message.
    #[error("nomad answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Nomad's (plain-text) error.
        message: String,
    },
    /// An answer we could not read.
    #[error("unexpected answer from nomad: {0}")]
    Decode(#[source] reqwest::Error),
}

impl NomadError {
    /// The HTTP status, when Nomad answered.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The general mapping: transport failures are `Unavailable`, everything else `Api` with
/// Nomad's status and message.
pub(crate) fn from_nomad(err: NomadError) -> BackendError {
    match err {
        NomadError::Transport(e) => BackendError::Unavailable(format!("nomad: {e}")),
        NomadError::Status { status, message } => BackendError::Api {
            status: Some(status),
            message,
            source: None,
        },
        NomadError::Decode(e) => BackendError::Api {
            status: None,
            message: e.to_string(),
            source: Some(Box::new(e)),
        },
    }
}

/// Like [`from_nomad`], but a 404 names the run's job.
pub(crate) fn for_handle(err: NomadError, handle: &RunHandle) -> BackendError {
    if err.status() == Some(404) {
        not_found(handle)
    } else {
        from_nomad(err)
    }
}

/// The error for a job Nomad does not know.
pub(crate) fn not_found(handle: &RunHandle) -> BackendError {
    BackendError::NotFound(format!(
        "nomad job {} of run {} attempt {}",
        handle.backend_ref, handle.run_id, handle.attempt
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_nomads_status_and_message() {
        let err = from_nomad(NomadError::Status {
            status: 403,
            message: "Permission denied".into(),
        });
        assert!(
            matches!(err, BackendError::Api { status: Some(403), ref message, .. } if message == "Permission denied"),
            "{err:?}"
        );
    }

    #[test]
    fn a_404_for_a_handle_is_not_found() {
        let handle = RunHandle {
            run_id: "r".into(),
            attempt: 1,
            backend_ref: "jobdock-r-1".into(),
        };
        let err = for_handle(
            NomadError::Status {
                status: 404,
                message: "job not found".into(),
            },
            &handle,
        );
        assert!(matches!(err, BackendError::NotFound(ref m) if m.contains("jobdock-r-1")));
    }
}
