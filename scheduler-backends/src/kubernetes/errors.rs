//! Kubernetes API failures and how they become [`BackendError`]s.
//!
//! The API server's status code is kept so callers can tell a 404 or 409 apart; transport
//! failures and the server's own 5xx/429 become [`BackendError::Unavailable`] so they are retried.

use crate::{BackendError, RunHandle};

/// The API status code of an error, when the server answered.
pub(crate) fn code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Whether the error is worth retrying: no answer, or the server is overloaded or failing.
pub(crate) fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// The general mapping.
pub(crate) fn from_kube(err: kube::Error) -> BackendError {
    if is_transient(&err) {
        return BackendError::Unavailable(format!("kubernetes: {err}"));
    }
    match err {
        kube::Error::Api(status) => BackendError::Api {
            status: Some(status.code),
            message: format!("{}: {}", status.reason, status.message),
            source: Some(Box::new(kube::Error::Api(status))),
        },
        other => BackendError::Api {
            status: None,
            message: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

/// Like [`from_kube`], but a 404 names the run's Job.
pub(crate) fn for_handle(err: kube::Error, handle: &RunHandle) -> BackendError {
    if code(&err) == Some(404) {
        not_found(handle)
    } else {
        from_kube(err)
    }
}

/// The error for a Job the cluster does not know.
pub(crate) fn not_found(handle: &RunHandle) -> BackendError {
    BackendError::NotFound(format!(
        "kubernetes job {} of run {} attempt {}",
        handle.backend_ref, handle.run_id, handle.attempt
    ))
}
