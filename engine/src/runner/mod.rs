//! Running runs: the dispatch loop claims queued runs, a supervisor task per run launches it,
//! stores its log, enforces its timeout and cancel, and records how it ended; a heartbeat
//! keeps this replica's leases, an adoption loop takes over runs nobody supervises (after a
//! crash of this replica or another), an alert loop delivers the alert outbox, and a
//! retention loop prunes old runs.

mod alerts;
mod deliver;
mod dispatch;
mod launch;
mod live;
mod logpump;
mod observe;
mod record;
mod redact;
mod retention;
mod schedules;
mod supervise;

pub use retention::RetentionConfig;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backends::Backends;
use crate::service::Ctx;
use crate::store::{now_ms, Dialect};

pub use alerts::AlertConfig;

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most bytes of log stored per run; past it lines are dropped and counted.
    pub log_cap_bytes: i64,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// How long a run waits for its backend to come back before it is marked `lost`.
    pub reattach_window: Duration,
    /// How often the dispatch loop looks for work when nothing wakes it.
    pub poll_interval: Duration,
    /// Most runs holding a slot at once per backend (e.g. 50 containers on one Docker host).
    pub backend_caps: std::collections::HashMap<String, i64>,
    /// A schedule tick missed while the engine was down fires at start-up if younger.
    pub schedule_catchup: Duration,
    /// A running run without output this long is `stalled` (zero: never), unless its job
    /// says otherwise.
    pub stall_after: Duration,
    /// How often running and waiting runs are checked for anomalies.
    pub monitor_interval: Duration,
    /// Which old runs are pruned, and how often.
    pub retention: RetentionConfig,
    /// How alerts are delivered.
    pub alerts: AlertConfig,
    /// The engine's address as runs reach it (`JOBDOCK_URL`), set when serving starts.
    pub run_url: Option<RunUrl>,
}

/// The engine's address for its runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUrl {
    /// E.g. `http://172.17.0.1:8080`.
    pub url: String,
    /// Configured (`advertise_url`): every backend's runs get it. Derived from the local
    /// Docker bridge: only the runs of `docker` and `swarm`, which run on this host.
    pub all_backends: bool,
}

impl RunUrl {
    /// The URL a run on `backend` with network `network` gets, if any: none for a job
    /// without a network.
    pub fn for_run(&self, backend: &str, network: Option<&str>) -> Option<&str> {
        if network == Some("none") {
            return None;
        }
        (self.all_backends || matches!(backend, "docker" | "swarm")).then_some(self.url.as_str())
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            log_cap_bytes: 64 * 1024 * 1024,
            lease_ttl: Duration::from_secs(30),
            reattach_window: Duration::from_secs(300),
            poll_interval: Duration::from_millis(500),
            backend_caps: [("docker".to_string(), 50)].into(),
            schedule_catchup: Duration::from_secs(3600),
            stall_after: Duration::from_secs(1800),
            monitor_interval: Duration::from_secs(2),
            retention: RetentionConfig::default(),
            alerts: AlertConfig::default(),
            run_url: None,
        }
    }
}

/// The runner of this replica. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Ctx,
    backends: Backends,
    config: RunnerConfig,
    /// This process's id, written as the owner of the leases it holds.
    owner: String,
    installation_id: String,
    wake: Notify,
    /// Notified when something was put in the alert outbox (a run's end, a test alert).
    alerts_due: Notify,
    /// Set when a job changed, so that schedules are re-read at once.
    jobs_changed: std::sync::atomic::AtomicBool,
    /// What each queued run was last recorded as waiting for, by this replica.
    waiting_noted: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
    /// What was last noted on the runs queued behind each job's first.
    behind_noted: tokio::sync::Mutex<dispatch::BehindNoted>,
    /// The runs this replica supervises, for its anomaly check.
    live: live::LiveRuns,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("owner", &self.inner.owner)
            .finish()
    }
}

impl Runner {
    /// A runner; nothing runs until [`Runner::start`].
    pub fn new(
        ctx: Ctx,
        backends: Backends,
        config: RunnerConfig,
        installation_id: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ctx,
                backends,
                config,
                owner: uuid::Uuid::new_v4().to_string(),
                installation_id,
                wake: Notify::new(),
                alerts_due: Notify::new(),
                jobs_changed: std::sync::atomic::AtomicBool::new(false),
                waiting_noted: Default::default(),
                behind_noted: Default::default(),
                live: Default::default(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// Wakes the dispatch loop (a run was queued or a slot freed).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Tells the runner that a job changed (its schedule may have).
    pub fn jobs_changed(&self) {
        self.inner
            .jobs_changed
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake();
    }

    /// Stops the loops. Supervisors stop watching; containers keep running and are adopted
    /// by the next start (or another replica).
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
    }

    /// Starts the loops: adoption of orphaned runs first, then dispatch, heartbeat, adoption.
    pub async fn start(&self) {
        // On SQLite there is one engine: every unfinished run was this engine's, before a
        // restart, and can be adopted at once instead of after its lease expires.
        let single = self.inner.ctx.store.dialect() == Dialect::Sqlite;
        self.adopt_orphans(single).await;
        self.release_fenced().await;
        self.sweep_leftovers().await;
        let r = self.clone();
        tokio::spawn(
            async move { r.dispatch_loop().await }.instrument(tracing::info_span!("dispatch")),
        );
        let r = self.clone();
        tokio::spawn(
            async move { r.heartbeat_loop().await }.instrument(tracing::info_span!("heartbeat")),
        );
        let r = self.clone();
        tokio::spawn(async move { r.adopt_loop().await }.instrument(tracing::info_span!("adopt")));
        let r = self.clone();
        tokio::spawn(
            async move { r.schedule_loop().await }.instrument(tracing::info_span!("schedules")),
        );
        let r = self.clone();
        tokio::spawn(async move { r.alert_loop().await }.instrument(tracing::info_span!("alerts")));
        let r = self.clone();
        tokio::spawn(
            async move { r.cancel_loop().await }.instrument(tracing::info_span!("cancels")),
        );
        let r = self.clone();
        tokio::spawn(
            async move { r.monitor_loop().await }.instrument(tracing::info_span!("monitor")),
        );
        let r = self.clone();
        tokio::spawn(
            async move { r.retention_loop().await }.instrument(tracing::info_span!("retention")),
        );
    }

    /// Tells the supervisors of this replica's runs of the cancels asked for on other
    /// replicas, or here a moment before a supervisor began to wait (those asked for here
    /// later are told at once), with one statement a second while any supervisor waits.
    async fn cancel_loop(&self) {
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let board = &self.inner.ctx.cancels;
            if board.is_empty() {
                continue;
            }
            match self
                .inner
                .ctx
                .store
                .cancels_requested_of(&self.inner.owner)
                .await
            {
                Ok(ids) => ids.iter().for_each(|id| board.requested(id)),
                Err(e) => tracing::debug!(error = %e, "could not look for cancels"),
            }
        }
    }

    /// Checks running and waiting runs for anomalies every few seconds: each replica the
    /// runs it supervises, and every replica the queue; the store raises each anomaly once.
    async fn monitor_loop(&self) {
        let mut check = crate::monitor::ActiveCheck::default();
        loop {
            let stall_after = self.inner.config.stall_after;
            let going = self.inner.live.snapshot();
            match check.pass(&self.inner.ctx.store, going, stall_after).await {
                Ok(raised) => {
                    for a in raised {
                        self.inner.ctx.metrics.anomaly_raised(a.kind.as_str());
                        tracing::warn!(run_id = %a.run_id, job = %a.job, kind = %a.kind, "{}", a.message);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking runs for anomalies failed"),
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.inner.config.monitor_interval) => {}
            }
        }
    }

    fn lease_until(&self) -> i64 {
        now_ms() + self.inner.config.lease_ttl.as_millis() as i64
    }

    async fn heartbeat_loop(&self) {
        let every = self.inner.config.lease_ttl / 3;
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self
                .inner
                .ctx
                .store
                .heartbeat(&self.inner.owner, self.lease_until())
                .await
            {
                tracing::warn!(error = %e, "could not extend leases");
            }
        }
    }

    async fn adopt_loop(&self) {
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.inner.config.lease_ttl / 2) => {}
            }
            self.adopt_orphans(false).await;
            self.release_fenced().await;
            self.sweep_leftovers().await;
        }
    }

    /// Takes over starting and running runs whose supervisor is gone.
    async fn adopt_orphans(&self, all: bool) {
        let names = self.inner.backends.name_strings();
        let orphans = match self.inner.ctx.store.orphans(&names, all).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for orphaned runs");
                return;
            }
        };
        for run in orphans {
            match self
                .inner
                .ctx
                .store
                .adopt(&run.id, &self.inner.owner, self.lease_until(), all)
                .await
            {
                Ok(true) => {
                    tracing::info!(run_id = %run.id, job = %run.job_name, status = %run.status, "adopting run");
                    self.spawn_supervisor(run);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(run_id = %run.id, error = %e, "could not adopt run"),
            }
        }
    }

    /// Frees the slots of runs given up as lost once their container is confirmed gone:
    /// stopped and removed now that the backend answers again.
    async fn release_fenced(&self) {
        let fenced = match self.inner.ctx.store.fenced().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "could not list runs awaiting their container's end");
                return;
            }
        };
        for run in fenced {
            let Some(backend) = self.inner.backends.get(&run.backend) else {
                continue;
            };
            let handle = run
                .backend_ref
                .as_deref()
                .and_then(|h| serde_json::from_str::<jobdock_backends::RunHandle>(h).ok());
            let gone = match &handle {
                None => true,
                Some(h) => {
                    backend.stop(h, Duration::from_secs(1)).await.is_ok()
                        && backend.cleanup(h).await.is_ok()
                }
            };
            if gone {
                tracing::info!(run_id = %run.id, "the lost run's container is gone; releasing its slots");
                if let Err(e) = self.inner.ctx.store.release_slot(&run.id).await {
                    tracing::warn!(run_id = %run.id, error = %e, "could not release the run's slots");
                }
                self.wake();
            }
        }
    }

    /// Removes containers of this installation whose runs have ended (the engine stopped
    /// between storing a run's end and removing its container, or the backend could not be
    /// reached when the run was given up as lost) or that no run knows.
    async fn sweep_leftovers(&self) {
        for (name, backend) in self.inner.backends.iter() {
            let found = match backend.list_in_flight(&self.inner.installation_id).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(backend = %name.as_str(), error = %e, "could not list containers");
                    continue;
                }
            };
            // One statement per 200 containers: asking run by run cost two statements (one
            // a whole run) per container every 15 s, 600 with 300 runs going.
            let ids: Vec<&str> = found.iter().map(|f| f.handle.run_id.as_str()).collect();
            let in_flight = match self.inner.ctx.store.attempts_in_flight(&ids).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look up the runs of the containers");
                    continue;
                }
            };
            for f in &found {
                // Ended, unknown, or an earlier attempt's: nothing should run it any more.
                let current = in_flight.get(&f.handle.run_id);
                if current != Some(&i64::from(f.handle.attempt)) {
                    tracing::info!(run_id = %f.handle.run_id, "removing a leftover container");
                    let _ = backend.stop(&f.handle, Duration::from_secs(1)).await;
                    if let Err(e) = backend.cleanup(&f.handle).await {
                        tracing::warn!(run_id = %f.handle.run_id, error = %e, "could not remove a leftover container");
                    }
                }
            }
        }
    }

    fn spawn_supervisor(&self, run: crate::store::runs::RunRow) {
        let r = self.clone();
        let span = tracing::info_span!("run", run_id = %run.id, job = %run.job_name, attempt = run.attempt);
        let in_flight = self.inner.ctx.metrics.supervising(&run.backend);
        tokio::spawn(
            async move {
                let _in_flight = in_flight;
                supervise::supervise(r, run).await
            }
            .instrument(span),
        );
    }
}
