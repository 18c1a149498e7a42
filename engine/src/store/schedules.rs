//! Where each job's schedule stands: the last tick it fired (or passed over).

use sqlx::Row;

use super::{Result, Store};

impl Store {
    /// Every job's last tick (Unix ms), by job id.
    pub async fn schedule_ticks(&self) -> Result<std::collections::HashMap<String, i64>> {
        let rows = sqlx::query("SELECT job_id, last_tick FROM schedule_ticks")
            .fetch_all(&mut self.read().await?)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("job_id")?, r.try_get("last_tick")?)))
            .collect()
    }

    /// Moves a job's last tick forward (never back: replicas may race).
    pub async fn advance_schedule(&self, job_id: &str, tick: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedule_ticks (job_id, last_tick) VALUES ($1, $2) \
             ON CONFLICT (job_id) DO UPDATE SET last_tick = excluded.last_tick \
             WHERE schedule_ticks.last_tick < excluded.last_tick",
        )
        .bind(job_id)
        .bind(tick)
        .execute(&mut self.write_alone().await?)
        .await?;
        Ok(())
    }
}
