//! Named locks shared by jobs: capacities, holders and waiters. A lock named in a job's
//! `lock_keys` exists with capacity 1 until its capacity is set.

use sqlx::Row;

use crate::store::Conn;

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
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM run_locks rl JOIN runs r ON r.id = rl.run_id \
                 WHERE rl.key = $1 AND r.holds_slot = 1) AS held, \
                COALESCE((SELECT capacity FROM locks WHERE key = $1), 1) AS capacity",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("held")?, row.try_get("capacity")?))
}

/// The runs holding lock `key`, oldest first.
pub async fn holding_lock(conn: &mut Conn, key: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT r.id FROM run_locks rl JOIN runs r ON r.id = rl.run_id \
         WHERE rl.key = $1 AND r.holds_slot = 1 ORDER BY r.seq",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
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
        let cond = if waiting {
            "r.status = 'queued'"
        } else {
            "r.holds_slot = 1"
        };
        let rows = sqlx::query(&format!(
            "SELECT r.id, r.job_name, r.created_at FROM run_locks rl JOIN runs r ON r.id = rl.run_id \
             WHERE rl.key = $1 AND {cond} ORDER BY r.seq"
        ))
        .bind(key)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LockRun {
                    run_id: r.try_get("id")?,
                    job: r.try_get("job_name")?,
                    created_at: from_ms(r.try_get("created_at")?),
                })
            })
            .collect()
    }
}
