//! Named locks shared by jobs: capacities, holders and waiters. A lock named in a job's
//! `lock_keys` exists with capacity 1 until its capacity is set.

use sqlx::Row;

use crate::store::Conn;

use super::runs::holding_locks;
use super::{from_ms, now_ms, Result, Store};

/// A run holding or waiting for a lock.
#[derive(Debug, Clone)]
pub struct LockRun {
    /// The run's id.
    pub run_id: String,
    /// Its job.
    pub job: String,
    /// When it was triggered.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// How many runs hold lock `key`, and its capacity (1 unless set).
pub async fn lock_usage(conn: &mut Conn, key: &str) -> Result<(i64, i64)> {
    let row = sqlx::query(&format!(
        "SELECT (SELECT COUNT(*) FROM {} AND rl.key = $1) AS held, \
                    COALESCE((SELECT capacity FROM locks WHERE key = $1), 1) AS capacity",
        holding_locks(conn.dialect())
    ))
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("held")?, row.try_get("capacity")?))
}

/// The runs holding lock `key`, oldest first.
pub async fn holding_lock(conn: &mut Conn, key: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(&format!(
        "SELECT r.seq, r.id FROM {} AND rl.key = $1",
        holding_locks(conn.dialect())
    ))
    .bind(key)
    .fetch_all(&mut *conn)
    .await?;
    let mut held = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>("seq")?, r.try_get("id")?)))
        .collect::<Result<Vec<(i64, String)>>>()?;
    // Sorted here: asked to, SQLite reads every run in queue order rather than the few
    // holding a slot.
    held.sort_unstable();
    Ok(held.into_iter().map(|(_, id)| id).collect())
}

/// Sets a lock's capacity.
pub async fn set_capacity(conn: &mut Conn, key: &str, capacity: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO locks (key, capacity, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET capacity = excluded.capacity, updated_at = excluded.updated_at",
    )
    .bind(key)
    .bind(capacity)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Locks whose capacity was set, with it.
    pub async fn lock_capacities(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT key, capacity FROM locks ORDER BY key")
            .fetch_all(&mut self.read().await?)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("capacity")?)))
            .collect()
    }

    /// Keys named by unfinished runs or holding runs.
    pub async fn keys_in_use(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT rl.key FROM run_locks rl JOIN runs r ON r.id = rl.run_id \
             WHERE r.holds_slot = 1 OR r.status = 'queued' ORDER BY rl.key",
        )
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("key")?)).collect()
    }

    /// The runs holding a lock (`waiting` false) or queued for it (`waiting` true), oldest first.
    pub async fn lock_runs(&self, key: &str, waiting: bool) -> Result<Vec<LockRun>> {
        let from = if waiting {
            // From the key's lock rows: its queue, not every run queued.
            "run_locks rl CROSS JOIN runs r WHERE r.id = rl.run_id AND r.status = 'queued'"
        } else {
            holding_locks(self.dialect())
        };
        let rows = sqlx::query(&format!(
            "SELECT r.seq, r.id, r.job_name, r.created_at FROM {from} AND rl.key = $1"
        ))
        .bind(key)
        .fetch_all(&mut self.read().await?)
        .await?;
        let mut runs = rows
            .iter()
            .map(|r| {
                let run = LockRun {
                    run_id: r.try_get("id")?,
                    job: r.try_get("job_name")?,
                    created_at: from_ms(r.try_get("created_at")?),
                };
                Ok((r.try_get::<i64, _>("seq")?, run))
            })
            .collect::<Result<Vec<(i64, LockRun)>>>()?;
        // Sorted here, as in `holding_lock`.
        runs.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(runs.into_iter().map(|(_, run)| run).collect())
    }
}
