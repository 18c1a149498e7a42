//! The dispatch loop: claims queued runs this replica can start, oldest first, in one
//! transaction per pass. A run starts only when every slot it needs is free at once — its
//! job's `max_parallel`, each of its locks, its backend's cap — and takes them all together,
//! so two jobs sharing two locks can never deadlock. Once a run of a job must wait, later
//! runs of that job wait too (first in, first out per job): a pass reads the first due run
//! of each job, and a job's next run only once it has claimed the one before.

use std::collections::{BTreeMap, HashMap};

use super::Runner;
use crate::store::runs::{self, DueRun, RunRow};
use crate::store::{events, Conn, StoreError};

/// Most runs one pass looks at; the rest wait for the next pass.
const PER_PASS: usize = 2_000;

/// What a dispatch pass did.
struct Pass {
    /// The runs it claimed.
    claimed: Vec<RunRow>,
    /// Whether it left due runs it could not start (no slot free, or past [`PER_PASS`]).
    left: bool,
}

/// What this replica last noted on the runs waiting behind a job's first queued run: which
/// run was first then, and the last run noted. A long queue costs no write per pass.
#[derive(Default)]
pub(super) struct BehindNoted(HashMap<String, (i64, i64)>);

impl Runner {
    pub(super) async fn dispatch_loop(&self) {
        // Whether the last pass left runs due that it could not start: when it did not, the
        // next first looks without the claim's transaction.
        let mut left = true;
        loop {
            match self.claim(!left).await {
                Ok(pass) => {
                    left = pass.left;
                    for run in pass.claimed {
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

    /// Claims what may start now: queued → starting under this replica's lease. With
    /// `look_first`, whether anything is due is first read outside the claim's transaction:
    /// most passes of a quiet engine (its timer's, the one after a run's end) find nothing,
    /// and then cost one read instead of the write lock (SQLite's, which a trigger waits
    /// for; PostgreSQL's advisory lock, which every replica's passes take in turn) and three
    /// statements.
    async fn claim(&self, look_first: bool) -> Result<Pass, StoreError> {
        let store = &self.inner.ctx.store;
        let backends = self.inner.backends.name_strings();
        let mut pass = Pass {
            claimed: Vec::new(),
            left: false,
        };
        if look_first && !runs::any_due(store, &backends).await? {
            return Ok(pass);
        }
        let mut tx = store.begin_claim().await?;
        // Each job's next due run, by queue order: the oldest of them is looked at first.
        let mut next: BTreeMap<i64, DueRun> = runs::heads(&mut tx, &backends)
            .await?
            .into_iter()
            .map(|due| (due.seq, due))
            .collect();
        if next.is_empty() {
            tx.commit().await?;
            return Ok(pass);
        }
        // What holds slots: read once from the store, then kept by this pass.
        let mut held = runs::held(&mut tx).await?;
        let mut looked = 0;
        while let Some((_, due)) = next.pop_first() {
            looked += 1;
            if looked > PER_PASS {
                pass.left = true;
                break;
            }
            if let Some(wait) = self.waits_for_job_or_backend(&held, &due) {
                pass.left = true;
                self.note_waiting(&mut tx, &due.id, due.attempt, &wait)
                    .await?;
                self.note_behind(&mut tx, &due).await?;
                continue;
            }
            // The whole run, for its locks and its supervisor. Whether it is still queued is
            // settled by `mark_starting` below.
            let run = match runs::get(&mut tx, &due.id).await {
                Ok(run) => Some(run),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e),
            };
            if let Some(run) = run {
                if let Some(wait) = waits_for_lock(&held, &run) {
                    pass.left = true;
                    self.note_waiting(&mut tx, &run.id, run.attempt, &wait)
                        .await?;
                    self.note_behind(&mut tx, &due).await?;
                    continue;
                }
                if runs::mark_starting(&mut tx, &run.id, &self.inner.owner, self.lease_until())
                    .await?
                {
                    take(&mut held, &run);
                    let mut run = run;
                    run.status = jobdock_types::RunStatus::Starting;
                    run.backend_ref = None;
                    pass.claimed.push(run);
                }
            }
            if let Some(after) = runs::next_of_job(&mut tx, &backends, &due).await? {
                next.insert(after.seq, after);
            }
        }
        tx.commit().await?;
        Ok(pass)
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

    /// Notes on the runs queued behind `first`, the first due run of its job, which cannot
    /// start now, that they wait behind it: those not noted since `first` became first.
    async fn note_behind(&self, tx: &mut Conn, first: &DueRun) -> Result<(), StoreError> {
        if first.last_seq <= first.seq {
            return Ok(());
        }
        let mut noted = self.inner.behind_noted.lock().await;
        let from = match noted.0.get(&first.job_id) {
            Some(&(head, upto)) if head == first.seq => upto,
            _ => first.seq,
        };
        if from >= first.last_seq {
            return Ok(());
        }
        let wait = format!("waiting behind an earlier run of job `{}`", first.job_name);
        runs::note_behind(tx, &first.job_id, from, first.last_seq, &wait).await?;
        if noted.0.len() > 10_000 {
            noted.0.clear();
        }
        noted
            .0
            .insert(first.job_id.clone(), (first.seq, first.last_seq));
        Ok(())
    }

    /// What the run waits for, in words, when its job or its backend has no slot free.
    fn waits_for_job_or_backend(&self, held: &runs::Held, due: &DueRun) -> Option<String> {
        let count = |map: &HashMap<String, i64>, k: &str| map.get(k).copied().unwrap_or(0);
        let limit = due.max_parallel;
        if count(&held.jobs, &due.job_id) >= limit {
            return Some(format!(
                "waiting for a slot of job `{}` (max_parallel {limit})",
                due.job_name
            ));
        }
        let cap = self.inner.config.backend_caps.get(&due.backend)?;
        (count(&held.backends, &due.backend) >= *cap).then(|| {
            format!(
                "waiting for backend `{}` (at most {cap} runs at once)",
                due.backend
            )
        })
    }
}

/// What the run waits for, in words, when one of its locks has no slot free.
fn waits_for_lock(held: &runs::Held, run: &RunRow) -> Option<String> {
    run.spec.lock_keys.iter().find_map(|key| {
        let taken = held.locks.get(key).copied().unwrap_or(0);
        let capacity = held.capacities.get(key).copied().unwrap_or(1);
        (taken >= capacity).then(|| format!("waiting for lock `{key}` (capacity {capacity})"))
    })
}

fn take(held: &mut runs::Held, run: &RunRow) {
    *held.jobs.entry(run.job_id.clone()).or_default() += 1;
    *held.backends.entry(run.backend.clone()).or_default() += 1;
    for key in &run.spec.lock_keys {
        *held.locks.entry(key.clone()).or_default() += 1;
    }
}
