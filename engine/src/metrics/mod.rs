//! The engine's Prometheus metrics: one [`Metrics`] (a registry and its families) made at
//! start-up and passed down, never global. `GET /metrics` encodes it.
//!
//! Every counter counts what this process did, in the process whose store transition
//! succeeded (a run's end by the supervisor whose compare-and-set won, a cancel by the
//! replica that made it), so that a sum over the replicas counts each run exactly once.
//! Nothing is derived from a database total, which every replica would report alike.

mod backend;

use std::sync::Arc;
use std::time::Duration;

use jobdock_types::RunStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub use backend::metered;

/// The content type of [`Metrics::encode`]'s text: OpenMetrics, which Prometheus asks for
/// and which `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Run durations: a second to four hours.
const RUN_BUCKETS: [f64; 14] = [
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];
/// Waits in the queue and for locks: from a claim pass's latency to an hour.
const WAIT_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// API requests: from a cached read to a long poll (60 s at most).
const HTTP_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStatus {
    job: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobTrigger {
    job: String,
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockLabel {
    lock: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOperation {
    backend: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    method: String,
    route: String,
    status: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

struct Families {
    registry: Registry,
    runs_finished: Family<JobStatus, Counter>,
    runs_triggered: Family<JobTrigger, Counter>,
    run_duration: Histograms<JobLabel>,
    queue_wait: Histograms<JobLabel>,
    lock_wait: Histograms<LockLabel>,
    in_flight: Family<BackendLabel, Gauge>,
    anomalies: Family<KindLabel, Counter>,
    backend_errors: Family<BackendOperation, Counter>,
    http: Histograms<Request>,
}

/// This process's metrics. Cheap to clone; every clone counts into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family, all names starting with `jobdock_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jobdock");
        let f = Families {
            runs_finished: Family::default(),
            runs_triggered: Family::default(),
            run_duration: Family::new_with_constructor(run_histogram),
            queue_wait: Family::new_with_constructor(wait_histogram),
            lock_wait: Family::new_with_constructor(wait_histogram),
            in_flight: Family::default(),
            anomalies: Family::default(),
            backend_errors: Family::default(),
            http: Family::new_with_constructor(http_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "build",
            "The engine's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "runs_finished",
            "Runs that reached a final status, counted by the replica that recorded it",
            f.runs_finished.clone(),
        );
        registry.register(
            "runs_triggered",
            "Runs created by a trigger (api, schedule, rerun), skipped ones included",
            f.runs_triggered.clone(),
        );
        registry.register_with_unit(
            "run_duration",
            "From a finished run's container start to its end",
            Unit::Seconds,
            f.run_duration.clone(),
        );
        registry.register_with_unit(
            "run_queue_wait",
            "From a run becoming due (triggered, or its retry's backoff over) to its claim",
            Unit::Seconds,
            f.queue_wait.clone(),
        );
        registry.register_with_unit(
            "lock_wait",
            "Queue wait of the runs that needed a lock, by lock",
            Unit::Seconds,
            f.lock_wait.clone(),
        );
        registry.register(
            "runs_in_flight",
            "Runs this replica supervises now (a sum over replicas is the total)",
            f.in_flight.clone(),
        );
        registry.register(
            "anomalies",
            "Anomalies raised, by kind",
            f.anomalies.clone(),
        );
        registry.register(
            "backend_errors",
            "Errors of backend calls made by the runner, by backend and operation",
            f.backend_errors.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "API requests by method, route template and status",
            Unit::Seconds,
            f.http.clone(),
        );
        Self {
            inner: Arc::new(Families { registry, ..f }),
        }
    }

    /// The whole exposition, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A run was created by a trigger of this kind (`api`, `schedule`, `rerun`).
    pub fn run_triggered(&self, job: &str, trigger: &str) {
        let labels = JobTrigger {
            job: job.into(),
            trigger: trigger.into(),
        };
        self.inner.runs_triggered.get_or_create(&labels).inc();
    }

    /// This replica moved a run to a final status; `duration` is its container's run time
    /// when it ran at all.
    pub fn run_finished(&self, job: &str, status: RunStatus, duration: Option<Duration>) {
        let labels = JobStatus {
            job: job.into(),
            status: status.as_str().into(),
        };
        self.inner.runs_finished.get_or_create(&labels).inc();
        if let Some(d) = duration {
            let job = JobLabel { job: job.into() };
            self.inner
                .run_duration
                .get_or_create(&job)
                .observe(d.as_secs_f64());
        }
    }

    /// This replica claimed a run that had waited `waited` since it was due, needing `locks`.
    pub fn run_claimed(&self, job: &str, waited: Duration, locks: &[String]) {
        let secs = waited.as_secs_f64();
        let job = JobLabel { job: job.into() };
        self.inner.queue_wait.get_or_create(&job).observe(secs);
        for lock in locks {
            let lock = LockLabel { lock: lock.clone() };
            self.inner.lock_wait.get_or_create(&lock).observe(secs);
        }
    }

    /// Counts a run supervised on `backend` until the guard is dropped.
    pub fn supervising(&self, backend: &str) -> InFlight {
        let gauge = self.inner.in_flight.get_or_create_owned(&BackendLabel {
            backend: backend.into(),
        });
        gauge.inc();
        InFlight(gauge)
    }

    /// Shows `runs_in_flight` of a backend at 0 before its first run.
    pub fn backend_known(&self, backend: &str) {
        let _ = self.inner.in_flight.get_or_create(&BackendLabel {
            backend: backend.into(),
        });
    }

    /// An anomaly of this kind was raised (by the replica that stored it).
    pub fn anomaly_raised(&self, kind: &str) {
        let labels = KindLabel { kind: kind.into() };
        self.inner.anomalies.get_or_create(&labels).inc();
    }

    /// A backend call of the runner failed.
    pub fn backend_error(&self, backend: &str, operation: &str) {
        let labels = BackendOperation {
            backend: backend.into(),
            operation: operation.into(),
        };
        self.inner.backend_errors.get_or_create(&labels).inc();
    }

    /// An API request was answered. `route` is the matched route's template (never the raw
    /// path: ids would make a series per run); `method` is one of the standard ones or
    /// `other`.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let labels = Request {
            method: method.into(),
            route: route.into(),
            status: status.to_string(),
        };
        self.inner
            .http
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

/// One supervised run in `jobdock_runs_in_flight`; dropping it takes the run off.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &Metrics) -> Vec<String> {
        m.encode().lines().map(str::to_string).collect()
    }

    fn has(m: &Metrics, line: &str) -> bool {
        lines(m).iter().any(|l| l == line)
    }

    #[test]
    fn the_exposition_is_openmetrics_with_every_name_prefixed() {
        let m = Metrics::new();
        m.run_triggered("sync", "api");
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(has(
            &m,
            &format!(
                "jobdock_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )
        ));
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("jobdock_"), "{l}");
        }
        for l in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(l.starts_with("# TYPE jobdock_"), "{l}");
        }
    }

    #[test]
    fn finished_runs_count_by_job_and_status_and_observe_their_duration() {
        let m = Metrics::new();
        m.run_finished("a", RunStatus::Succeeded, Some(Duration::from_secs(3)));
        m.run_finished("a", RunStatus::Succeeded, Some(Duration::from_secs(40)));
        m.run_finished("a", RunStatus::Skipped, None);
        assert!(has(
            &m,
            "jobdock_runs_finished_total{job=\"a\",status=\"succeeded\"} 2"
        ));
        assert!(has(
            &m,
            "jobdock_runs_finished_total{job=\"a\",status=\"skipped\"} 1"
        ));
        assert!(has(&m, "jobdock_run_duration_seconds_count{job=\"a\"} 2"));
        assert!(has(&m, "jobdock_run_duration_seconds_sum{job=\"a\"} 43.0"));
        assert!(has(
            &m,
            "jobdock_run_duration_seconds_bucket{le=\"5.0\",job=\"a\"} 1"
        ));
        assert!(has(
            &m,
            "jobdock_run_duration_seconds_bucket{le=\"+Inf\",job=\"a\"} 2"
        ));
    }

    #[test]
    fn claims_observe_the_queue_wait_and_each_lock() {
        let m = Metrics::new();
        let locks = vec!["source-api".to_string(), "target".to_string()];
        m.run_claimed("a", Duration::from_millis(300), &locks);
        m.run_claimed("b", Duration::from_millis(10), &[]);
        assert!(has(&m, "jobdock_run_queue_wait_seconds_count{job=\"a\"} 1"));
        assert!(has(&m, "jobdock_run_queue_wait_seconds_count{job=\"b\"} 1"));
        assert!(has(
            &m,
            "jobdock_lock_wait_seconds_count{lock=\"source-api\"} 1"
        ));
        assert!(has(
            &m,
            "jobdock_lock_wait_seconds_count{lock=\"target\"} 1"
        ));
    }

    #[test]
    fn in_flight_follows_the_guards() {
        let m = Metrics::new();
        m.backend_known("swarm");
        let a = m.supervising("docker");
        let b = m.supervising("docker");
        assert!(has(&m, "jobdock_runs_in_flight{backend=\"docker\"} 2"));
        assert!(has(&m, "jobdock_runs_in_flight{backend=\"swarm\"} 0"));
        drop(a);
        assert!(has(&m, "jobdock_runs_in_flight{backend=\"docker\"} 1"));
        drop(b);
        assert!(has(&m, "jobdock_runs_in_flight{backend=\"docker\"} 0"));
    }

    #[test]
    fn anomalies_backend_errors_and_requests_are_counted_by_their_labels() {
        let m = Metrics::new();
        m.anomaly_raised("slow_run");
        m.anomaly_raised("slow_run");
        m.anomaly_raised("failure_streak");
        m.backend_error("docker", "launch");
        m.http_request("GET", "/api/v1/runs/{id}", 200, Duration::from_millis(20));
        assert!(has(&m, "jobdock_anomalies_total{kind=\"slow_run\"} 2"));
        assert!(has(
            &m,
            "jobdock_anomalies_total{kind=\"failure_streak\"} 1"
        ));
        assert!(has(
            &m,
            "jobdock_backend_errors_total{backend=\"docker\",operation=\"launch\"} 1"
        ));
        assert!(has(
            &m,
            "jobdock_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/runs/{id}\",status=\"200\"} 1"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.anomaly_raised("a\"b\\c\nd");
        assert!(has(
            &m,
            "jobdock_anomalies_total{kind=\"a\\\"b\\\\c\\nd\"} 1"
        ));
    }
}
