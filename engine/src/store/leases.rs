//! Which replica supervises which run: leases that a heartbeat extends, adoption of runs
//! whose supervisor is gone, the slots of lost runs released once their container is
//! confirmed gone, and which containers the sweep finds still belong to a run going.

use sqlx::Row;

use super::runs::{decode, RunRow, COLUMNS};
use super::{now_ms, Result, Store};

impl Store {
    /// Extends the lease of every run this replica supervises.
    pub async fn heartbeat(&self, owner: &str, until: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET lease_expires_at = $1 WHERE lease_owner = $2 \
             AND status IN ('starting', 'running')",
        )
        .bind(until)
        .bind(owner)
        .execute(&mut self.write_alone().await?)
        .await?;
        Ok(done.rows_affected())
    }

    /// Takes over a starting or running run whose lease has expired (or that belongs to
    /// `stale_owner`, e.g. this replica's previous life on SQLite). True when taken.
    pub async fn adopt(&self, id: &str, owner: &str, until: i64, any_owner: bool) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET lease_owner = $1, lease_expires_at = $2 WHERE id = $3 \
             AND status IN ('starting', 'running') \
             AND ($4 = 1 OR lease_expires_at IS NULL OR lease_expires_at < $5)",
        )
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(any_owner as i64)
        .bind(now_ms())
        .execute(&mut self.write_alone().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Starting or running runs supervised by nobody alive: leases expired, or (`all`) any.
    pub async fn orphans(&self, backends: &[String], all: bool) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM runs WHERE status IN ('starting', 'running') \
             AND ($1 = 1 OR lease_expires_at IS NULL OR lease_expires_at < $2) ORDER BY seq"
        ))
        .bind(all as i64)
        .bind(now_ms())
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter()
            .map(decode)
            .filter(|r| r.as_ref().map_or(true, |r| backends.contains(&r.backend)))
            .collect()
    }

    /// Of the runs `ids`, those that exist and have not ended, with their current attempt:
    /// in a statement per 200 runs (the sweep asks about every container it finds).
    pub async fn attempts_in_flight(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>> {
        let mut found = std::collections::HashMap::new();
        for batch in ids.chunks(200) {
            let sql = format!(
                "SELECT id, attempt FROM runs WHERE id IN ({}) \
                 AND status IN ('queued', 'starting', 'running')",
                super::placeholders(batch.len())
            );
            let mut q = sqlx::query(&sql);
            for id in batch {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&mut self.read().await?).await? {
                found.insert(r.try_get("id")?, r.try_get("attempt")?);
            }
        }
        Ok(found)
    }

    /// Ended runs that still hold their slots because their container was not confirmed
    /// gone, oldest first. Sorted here: asked to sort by `seq`, SQLite read every run in
    /// queue order rather than the few holding a slot (`runs_holding`): 190–250 ms on a store
    /// of a million runs, against 0.03 ms.
    pub async fn fenced(&self) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM runs WHERE holds_slot = 1 \
             AND status NOT IN ('queued', 'starting', 'running')"
        ))
        .fetch_all(&mut self.read().await?)
        .await?;
        let mut runs = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        runs.sort_unstable_by_key(|r| r.seq);
        Ok(runs)
    }

    /// Releases the slots of an ended run whose container is now known to be gone.
    pub async fn release_slot(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE runs SET holds_slot = 0 WHERE id = $1 \
             AND status NOT IN ('queued', 'starting', 'running')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            super::runs::release_locks(&mut tx, id).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
