//! Turning bollard's errors into [`BackendError`]s.
//!
//! The daemon's status code is kept so that callers can tell a 404 or a 409 apart, and
//! transport failures become [`BackendError::Unavailable`] so the engine retries them.

use bollard::errors::Error as DockerError;

use crate::{BackendError, RunHandle};

/// The HTTP status the daemon answered with, when the error is one of its answers.
pub(crate) fn status_of(err: &DockerError) -> Option<u16> {
    match err {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether the daemon said "no such container / image".
pub(crate) fn is_not_found(err: &DockerError) -> bool {
    status_of(err) == Some(404)
}

/// Whether the request never got an answer from the daemon (socket missing, connection
/// refused or reset, timeout).
pub(crate) fn is_transport(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::HyperLegacyError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::IOError { .. }
            | DockerError::SocketNotFoundError(_)
            | DockerError::RequestTimeoutError
    )
}

/// The general mapping: transport failures are `Unavailable`, everything else `Api` with the
/// daemon's status and message.
pub(crate) fn from_docker(err: DockerError) -> BackendError {
    if is_transport(&err) {
        return BackendError::Unavailable(format!("docker daemon: {err}"));
    }
    let (status, message) = match &err {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => (Some(*status_code), message.clone()),
        other => (None, other.to_string()),
    };
    BackendError::Api {
        status,
        message,
        source: Some(Box::new(err)),
    }
}

/// Like [`from_docker`], but a 404 names the run's container.
pub(crate) fn for_handle(err: DockerError, handle: &RunHandle) -> BackendError {
    if is_not_found(&err) {
        not_found(handle)
    } else {
        from_docker(err)
    }
}

/// The error for a container the daemon does not know.
pub(crate) fn not_found(handle: &RunHandle) -> BackendError {
    BackendError::NotFound(format!(
        "container {} of run {} attempt {}",
        handle.backend_ref, handle.run_id, handle.attempt
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_daemons_status_and_message() {
        let err = from_docker(DockerError::DockerResponseServerError {
            status_code: 409,
            message: "Conflict. The container name is already in use".into(),
        });
        match err {
            BackendError::Api {
                status, message, ..
            } => {
                assert_eq!(status, Some(409));
                assert!(message.contains("already in use"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let err = from_docker(DockerError::SocketNotFoundError(
            "/var/run/docker.sock".into(),
        ));
        assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn a_404_for_a_handle_is_not_found() {
        let handle = RunHandle {
            run_id: "r".into(),
            attempt: 2,
            backend_ref: "abc".into(),
        };
        let err = for_handle(
            DockerError::DockerResponseServerError {
                status_code: 404,
                message: "No such container: abc".into(),
            },
            &handle,
        );
        assert!(
            matches!(err, BackendError::NotFound(ref m) if m.contains("abc")),
            "{err:?}"
        );
    }
}
