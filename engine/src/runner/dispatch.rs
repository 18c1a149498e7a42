//! The dispatch loop: claims queued runs this replica can start, oldest first, in one
//! transaction per pass. A run starts only when every slot it needs is free at once — its
//! job's `max_parallel`, each of its locks, its backend's cap — and takes them all together,
//! so two jobs sharing two locks can never deadlock. Once a run of a job must wait, later
//! runs of that job wait too (first in, first out per job).

use std::collections::{HashMap, HashSet};

use super::Runner;
use crate::store::events;
use crate::store::locks::lock_usage;
use crate::store::runs::{self, RunRow};
use crate::store::{Conn, StoreError};

/// Queued runs read per page; a pass reads at most `PAGES` pages, so that runs stuck behind
/// a full lock do not hide startable ones further back.
const PAGE: i64 = 200;
const PAGES: usize = 10;

/// What one pass knows of the slots taken: counted once from the store, then kept.
#[derive(Default)]
struct Slots {
    job: HashMap<String, i64>,
    /// The job's `max_parallel` now: raising it lets queued runs start.
    job_limit: HashMap<String, i64>,
    lock: HashMap<String, (i64, i64)>,
    backend: HashMap<String, i64>,
    blocked_jobs: HashSet<String>,
}

impl Runner {
    pub(super) async fn dispatch_loop(&self) {
        loop {
            match self.claim().await {
                Ok(claimed) => {
                    for run in claimed {
                        self.observe_claim(&run);
                        self.spawn_supervisor(run);
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
        let mut tx = self.inner.ctx.store.begin_claim().await?;
        let backends = self.inner.backends.name_strings();
        let mut slots = Slots::default();
        let mut claimed = Vec::new();
        let mut after = 0;
        for _ in 0..PAGES {
            let due = runs::due(&mut tx, &backends, after, PAGE).await?;
            let last_page = (due.len() as i64) < PAGE;
            for due in due {
                after = due.seq;
                if slots.blocked_jobs.contains(&due.job_id) {
                    let wait = format!("waiting behind an earlier run of job `{}`", due.job_name);
                    self.note_waiting(&mut tx, &due.id, due.attempt, &wait)
                        .await?;
                    continue;
                }
                // The whole run, for its locks and its supervisor. Whether it is still
                // queued is settled by `mark_starting` below, as for the page itself.
                let run = match runs::get(&mut tx, &due.id).await {
                    Ok(run) => run,
                    Err(StoreError::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                if let Some(wait) = self.fits(&mut tx, &mut slots, &run).await? {
                    slots.blocked_jobs.insert(run.job_id.clone());
                    self.note_waiting(&mut tx, &run.id, run.attempt, &wait)
                        .await?;
                    continue;
                }
                if runs::mark_starting(&mut tx, &run.id, &self.inner.owner, self.lease_until())
                    .await?
                {
                    take(&mut slots, &run);
                    let mut run = run;
                    run.status = jobdock_types::RunStatus::Starting;
                    run.backend_ref = None;
                    claimed.push(run);
                }
            }
            if last_page {
                break;
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records, once per reason, what a run waits for. This replica remembers what it
    /// recorded, so that a long queue costs no write per pass.
    async fn note_waiting(
        &self,
        tx: &mut Conn,
        run_id: &str,
        attempt: i64,
        wait: &str,
    ) -> Result<(), StoreError> {
        let mut noted = self.inner.waiting_noted.lock().await;
        if noted.get(run_id).map(String::as_str) == Some(wait) {
            return Ok(());
        }
        events::note_waiting(tx, run_id, attempt, wait).await?;
        if noted.len() > 10_000 {
            noted.clear();
        }
        noted.insert(run_id.to_owned(), wait.to_owned());
        Ok(())
    }

    /// `None` when every slot the run needs is free, else what it waits for, in words.
    async fn fits(
        &self,
        tx: &mut Conn,
        slots: &mut Slots,
        run: &RunRow,
    ) -> Result<Option<String>, StoreError> {
        let job_held = match slots.job.get(&run.job_id) {
            Some(n) => *n,
            None => {
                let n = runs::active_for_job(tx, &run.job_id).await?;
                *slots.job.entry(run.job_id.clone()).or_insert(n)
            }
        };
        let limit = match slots.job_limit.get(&run.job_id) {
            Some(n) => *n,
            None => {
                let n = crate::store::jobs::max_parallel(tx, &run.job_id).await?;
                *slots.job_limit.entry(run.job_id.clone()).or_insert(n)
            }
        };
        if job_held >= limit {
            return Ok(Some(format!(
                "waiting for a slot of job `{}` (max_parallel {limit})",
                run.job_name
            )));
        }
        if let Some(cap) = self.inner.config.backend_caps.get(&run.backend) {
            let held = match slots.backend.get(&run.backend) {
                Some(n) => *n,
                None => {
                    let n = runs::active_on_backend(tx, &run.backend).await?;
                    *slots.backend.entry(run.backend.clone()).or_insert(n)
                }
            };
            if held >= *cap {
                return Ok(Some(format!(
                    "waiting for backend `{}` (at most {cap} runs at once)",
                    run.backend
                )));
            }
        }
        for key in &run.spec.lock_keys {
            let (held, capacity) = match slots.lock.get(key) {
                Some(u) => *u,
                None => {
                    let u = lock_usage(tx, key).await?;
                    *slots.lock.entry(key.clone()).or_insert(u)
                }
            };
            if held >= capacity {
                return Ok(Some(format!(
                    "waiting for lock `{key}` (capacity {capacity})"
                )));
            }
        }
        Ok(None)
    }
}

fn take(slots: &mut Slots, run: &RunRow) {
    *slots.job.entry(run.job_id.clone()).or_default() += 1;
    if let Some(n) = slots.backend.get_mut(&run.backend) {
        *n += 1;
    }
    for key in &run.spec.lock_keys {
        if let Some(u) = slots.lock.get_mut(key) {
            u.0 += 1;
        }
    }
}
