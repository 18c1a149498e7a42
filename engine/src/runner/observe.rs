//! What the runner tells the metrics, called right after the store transition that this
//! replica won (a claim committed, a final status recorded), so that each event is counted
//! once across replicas.

use std::time::Duration;

use jobdock_types::RunStatus;

use super::Runner;
use crate::store::now_ms;
use crate::store::runs::RunRow;

impl Runner {
    /// A claim of `run` (queued → starting) was committed by this replica: how long it
    /// waited since it was due (triggered, or its retry's backoff over).
    pub(super) fn observe_claim(&self, run: &RunRow) {
        let due = run.next_attempt_at.unwrap_or(run.created_at);
        let waited = Duration::from_millis((now_ms() - due).max(0) as u64);
        self.inner
            .ctx
            .metrics
            .run_claimed(&run.job_name, waited, &run.spec.lock_keys);
    }

    /// This replica recorded how an attempt of `run` ended; when that made the run final
    /// (no retry follows), counts it with its duration as stored.
    pub(super) fn observe_settled(
        &self,
        run: &RunRow,
        status: RunStatus,
        retry: bool,
        duration: Option<Duration>,
    ) {
        if retry {
            return;
        }
        self.inner
            .ctx
            .metrics
            .run_finished(&run.job_name, status, duration);
    }
}
