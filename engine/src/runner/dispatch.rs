//! The dispatch loop: claims queued runs this replica can start, in the order they were
//! triggered, without ever exceeding a job's `max_parallel`, all in one transaction.

use std::collections::HashMap;

use super::Runner;
use crate::store::runs::{self, RunRow};
use crate::store::{Dialect, StoreError};

/// Serialises claims across replicas on PostgreSQL; any constant shared by all replicas.
const CLAIM_LOCK: i64 = 0x006a_6f62_646f_636b;

/// Most runs claimed in one pass.
const BATCH: i64 = 100;

impl Runner {
    pub(super) async fn dispatch_loop(&self) {
        loop {
            match self.claim().await {
                Ok(claimed) => {
                    let full = claimed.len() as i64 == BATCH;
                    for run in claimed {
                        self.spawn_supervisor(run);
                    }
                    if full {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming runs failed; retrying"),
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.config.poll_interval) => {}
            }
        }
    }

    /// Claims what may start now: queued → starting under this replica's lease.
    async fn claim(&self) -> Result<Vec<RunRow>, StoreError> {
        let store = &self.inner.ctx.store;
        let mut tx = store.begin_write().await?;
        if store.dialect() == Dialect::Postgres {
            // One claimer at a time across replicas: counting slots and taking them must not
            // interleave, or two replicas could both see a free slot.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CLAIM_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let due = runs::due(&mut tx, &self.inner.backends.name_strings(), BATCH).await?;
        let mut active: HashMap<String, i64> = HashMap::new();
        let mut claimed = Vec::new();
        for run in due {
            let held = match active.get(&run.job_id) {
                Some(n) => *n,
                None => runs::active_for_job(&mut tx, &run.job_id).await?,
            };
            let max = run.spec.max_parallel.unwrap_or(1);
            if held >= max {
                active.insert(run.job_id.clone(), held);
                continue;
            }
            if runs::mark_starting(&mut tx, &run.id, &self.inner.owner, self.lease_until()).await? {
                active.insert(run.job_id.clone(), held + 1);
                let mut run = run;
                run.status = jobdock_types::RunStatus::Starting;
                run.backend_ref = None;
                claimed.push(run);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }
}
