//! Backend errors, counted where every call of the runner passes: a wrapper around each
//! backend that counts failed calls by operation and hands everything else through. A
//! `NotFound` is an answer (the run is gone), not a failure of the backend, and is not
//! counted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use jobdock_backends::{
    Backend, BackendError, BackendHealth, BackendKind, Exit, InFlight, LaunchSpec, LogFrom,
    LogStreamBox, RunHandle, TaskState,
};

use super::Metrics;
use crate::backends::Backends;

/// The same backends, each counting its errors into `metrics`.
pub fn metered(backends: &Backends, metrics: &Metrics) -> Backends {
    Backends::from_list(
        backends
            .iter()
            .map(|(name, b)| {
                metrics.backend_known(name.as_str());
                let wrapped: Arc<dyn Backend> = Arc::new(Metered {
                    inner: b.clone(),
                    name: name.as_str(),
                    metrics: metrics.clone(),
                });
                (*name, wrapped)
            })
            .collect(),
    )
}

struct Metered {
    inner: Arc<dyn Backend>,
    name: &'static str,
    metrics: Metrics,
}

impl Metered {
    fn count<T>(&self, operation: &str, r: Result<T, BackendError>) -> Result<T, BackendError> {
        if let Err(e) = &r {
            if !matches!(e, BackendError::NotFound(_)) {
                self.metrics.backend_error(self.name, operation);
            }
        }
        r
    }
}

#[async_trait]
impl Backend for Metered {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    async fn health(&self) -> BackendHealth {
        self.inner.health().await
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<RunHandle, BackendError> {
        self.count("launch", self.inner.launch(spec).await)
    }

    async fn state(&self, handle: &RunHandle) -> Result<TaskState, BackendError> {
        self.count("state", self.inner.state(handle).await)
    }

    fn logs(&self, handle: &RunHandle, from: &LogFrom) -> LogStreamBox {
        let metrics = self.metrics.clone();
        let name = self.name;
        self.inner
            .logs(handle, from)
            .inspect(move |item| {
                if matches!(item, Err(e) if !matches!(e, BackendError::NotFound(_))) {
                    metrics.backend_error(name, "logs");
                }
            })
            .boxed()
    }

    async fn wait(&self, handle: &RunHandle) -> Result<Exit, BackendError> {
        self.count("wait", self.inner.wait(handle).await)
    }

    async fn stop(&self, handle: &RunHandle, grace: Duration) -> Result<(), BackendError> {
        self.count("stop", self.inner.stop(handle, grace).await)
    }

    async fn cleanup(&self, handle: &RunHandle) -> Result<(), BackendError> {
        self.count("cleanup", self.inner.cleanup(handle).await)
    }

    async fn list_in_flight(&self, installation_id: &str) -> Result<Vec<InFlight>, BackendError> {
        self.count("list", self.inner.list_in_flight(installation_id).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobdock_types::BackendName;

    /// A backend whose every call fails as told.
    struct Failing(fn() -> BackendError);

    #[async_trait]
    impl Backend for Failing {
        fn kind(&self) -> BackendKind {
            BackendKind::Docker
        }
        async fn health(&self) -> BackendHealth {
            BackendHealth {
                ok: false,
                detail: "down".into(),
            }
        }
        async fn launch(&self, _: &LaunchSpec) -> Result<RunHandle, BackendError> {
            Err((self.0)())
        }
        async fn state(&self, _: &RunHandle) -> Result<TaskState, BackendError> {
            Err((self.0)())
        }
        fn logs(&self, _: &RunHandle, _: &LogFrom) -> LogStreamBox {
            futures::stream::iter([Err((self.0)())]).boxed()
        }
        async fn wait(&self, _: &RunHandle) -> Result<Exit, BackendError> {
            Err((self.0)())
        }
        async fn stop(&self, _: &RunHandle, _: Duration) -> Result<(), BackendError> {
            Err((self.0)())
        }
        async fn cleanup(&self, _: &RunHandle) -> Result<(), BackendError> {
            Err((self.0)())
        }
        async fn list_in_flight(&self, _: &str) -> Result<Vec<InFlight>, BackendError> {
            Err((self.0)())
        }
    }

    fn handle() -> RunHandle {
        RunHandle {
            run_id: "r".into(),
            attempt: 1,
            backend_ref: "c".into(),
        }
    }

    async fn exercise(b: &Arc<dyn Backend>) {
        let h = handle();
        let _ = b.state(&h).await;
        let _ = b.wait(&h).await;
        let _ = b.stop(&h, Duration::ZERO).await;
        let _ = b.cleanup(&h).await;
        let _ = b.list_in_flight("i").await;
        let _ = b.logs(&h, &LogFrom::start()).collect::<Vec<_>>().await;
    }

    #[tokio::test]
    async fn failed_calls_are_counted_by_operation_but_not_found_is_not() {
        let m = Metrics::new();
        let unavailable: Arc<dyn Backend> =
            Arc::new(Failing(|| BackendError::Unavailable("gone".into())));
        let b = metered(
            &Backends::from_list(vec![(BackendName::Docker, unavailable)]),
            &m,
        );
        exercise(b.get("docker").unwrap()).await;
        exercise(b.get("docker").unwrap()).await;
        let text = m.encode();
        for op in ["state", "wait", "stop", "cleanup", "list", "logs"] {
            let line =
                format!("jobdock_backend_errors_total{{backend=\"docker\",operation=\"{op}\"}} 2");
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }

        let m = Metrics::new();
        let missing: Arc<dyn Backend> = Arc::new(Failing(|| BackendError::NotFound("c".into())));
        let b = metered(
            &Backends::from_list(vec![(BackendName::Docker, missing)]),
            &m,
        );
        exercise(b.get("docker").unwrap()).await;
        assert!(!m.encode().contains("jobdock_backend_errors_total{"));
    }
}
