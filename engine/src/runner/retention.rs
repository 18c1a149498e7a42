//! The retention loop: at start and then every hour, prunes final runs past the age limit
//! or beyond each job's count, in small steps (see [`crate::store::retention`]), and trims
//! each job's statistics to their newest rows. Every replica runs it; on PostgreSQL one
//! prunes at a time and the others skip their turn.

use std::time::{Duration, Instant};

use crate::store::retention::{Cut, Policy, Step};
use crate::store::{now_ms, stats, Dialect, StoreError};

use super::Runner;

/// Settings of retention.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Which runs are kept.
    pub policy: Policy,
    /// How often the task runs (and once at start).
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            policy: Policy {
                days: 30,
                max_runs_per_job: 1000,
            },
            every: Duration::from_secs(3600),
        }
    }
}

/// The shortest pause between steps, so that other writers get the database in between.
const BETWEEN_STEPS: Duration = Duration::from_millis(20);

/// The shortest pause on SQLite, whose writers wait for its one write lock by trying again
/// every 100 ms once they have waited a while: a shorter pause let the next step take the
/// lock first, again and again, and held a trigger up for seconds while a million runs were
/// pruned.
const BETWEEN_STEPS_SQLITE: Duration = Duration::from_millis(120);

impl Runner {
    pub(super) async fn retention_loop(&self) {
        loop {
            let pruned = self.prune().await;
            match &pruned {
                Ok(0) => tracing::debug!("nothing to prune"),
                Ok(n) => tracing::info!(runs = n, "pruned old runs and their logs"),
                Err(e) => tracing::warn!(error = %e, "pruning old runs failed; retrying later"),
            }
            if !matches!(pruned, Ok(0)) {
                // Ended runs are kept in memory for polls; some are gone now.
                self.inner.ctx.finished.forget_all();
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.inner.config.retention.every) => {}
            }
        }
    }

    /// One pass: the age cut, the count cut of each job over its count, then the statistics.
    /// Returns how many runs were deleted.
    async fn prune(&self) -> Result<u64, StoreError> {
        let store = &self.inner.ctx.store;
        let policy = self.inner.config.retention.policy;
        let now = now_ms();
        let mut deleted = match self.prune_cut(&policy, Cut::Age, now).await? {
            Some(n) => n,
            None => return Ok(0),
        };
        for job in store.jobs_over_count(policy.max_runs_per_job).await? {
            match self.prune_cut(&policy, Cut::Count(&job), now).await? {
                Some(n) => deleted += n,
                None => return Ok(deleted),
            }
        }
        for job in store.jobs_over_stats(stats::KEEP_PER_JOB).await? {
            loop {
                if self.inner.shutdown.is_cancelled() {
                    return Ok(deleted);
                }
                let started = Instant::now();
                let mut tx = store.begin_write().await?;
                let n = stats::trim(&mut tx, &job, stats::KEEP_PER_JOB, 500).await?;
                tx.commit().await?;
                if n == 0 {
                    break;
                }
                self.pause_after(started).await;
            }
        }
        // Alerts delivered or given up are kept as long as runs are.
        let before = now - policy.days * 86_400_000;
        loop {
            if self.inner.shutdown.is_cancelled() {
                return Ok(deleted);
            }
            let started = Instant::now();
            let mut tx = store.begin_write().await?;
            let n = crate::store::alerts::outbox::prune(&mut tx, before, 500).await?;
            tx.commit().await?;
            if n == 0 {
                break;
            }
            self.pause_after(started).await;
        }
        Ok(deleted)
    }

    /// Steps through one rule until nothing is left; `None` when another replica is pruning
    /// or the engine is stopping.
    async fn prune_cut(
        &self,
        policy: &Policy,
        cut: Cut<'_>,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut deleted = 0;
        loop {
            if self.inner.shutdown.is_cancelled() {
                return Ok(None);
            }
            let started = Instant::now();
            match self.inner.ctx.store.prune_step(policy, cut, now).await? {
                // Nothing went although runs were found: leave them to the next pass.
                Step::Deleted(0) => return Ok(Some(deleted)),
                Step::Deleted(n) => deleted += n,
                Step::Trimmed => {}
                Step::Nothing => return Ok(Some(deleted)),
                Step::Busy => {
                    tracing::debug!("another replica is pruning");
                    return Ok(None);
                }
            }
            self.pause_after(started).await;
        }
    }

    /// Waits between two steps long enough for the writers that waited on the step to have
    /// their turn: twice the step's time, and at least [`BETWEEN_STEPS`] (or
    /// [`BETWEEN_STEPS_SQLITE`]).
    async fn pause_after(&self, step_started: Instant) {
        let floor = match self.inner.ctx.store.dialect() {
            Dialect::Sqlite => BETWEEN_STEPS_SQLITE,
            Dialect::Postgres => BETWEEN_STEPS,
        };
        tokio::time::sleep(floor.max(step_started.elapsed() * 2)).await;
    }
}
