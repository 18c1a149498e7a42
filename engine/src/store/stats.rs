//! Per-job statistics of finished runs (`run_stats`): one compact row per run, written in
//! the transaction that makes the run final and kept when retention prunes the run, so that
//! durations and start latencies keep a baseline (for `GET /jobs/{name}/stats` and the
//! anomaly detector).

use jobdock_types::RunStatus;
use sqlx::Row;

use crate::store::Conn;

use super::{Result, Store, StoreError};

/// How many rows per job the retention task keeps.
pub const KEEP_PER_JOB: i64 = 1000;

/// One finished run, as its statistics keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStat {
    /// The run's id (the run itself may have been pruned since).
    pub run_id: String,
    /// The job's name.
    pub job_name: String,
    /// When it reached its final status, Unix ms.
    pub finished_at: i64,
    /// Its final status.
    pub status: RunStatus,
    /// Its last attempt's container start to its end, in ms; `None` when it never started.
    pub duration_ms: Option<i64>,
    /// From its trigger to its first attempt's start, in ms; `None` when it never started.
    pub start_latency_ms: Option<i64>,
}

const COLUMNS: &str = "run_id, job_name, finished_at, status, duration_ms, start_latency_ms";

fn decode(r: &sqlx::any::AnyRow) -> Result<RunStat> {
    Ok(RunStat {
        run_id: r.try_get("run_id")?,
        job_name: r.try_get("job_name")?,
        finished_at: r.try_get("finished_at")?,
        status: r
            .try_get::<String, _>("status")?
            .parse()
            .map_err(StoreError::Corrupt)?,
        duration_ms: r.try_get("duration_ms")?,
        start_latency_ms: r.try_get("start_latency_ms")?,
    })
}

/// Records the statistics of a run that has just been made final, from its stored row, in
/// the caller's transaction. Recording a run twice keeps the first row.
pub async fn record(conn: &mut Conn, run_id: &str) -> Result<()> {
    // Times of the start may come from the backend's clock: a negative span is taken as 0.
    sqlx::query(
        "INSERT INTO run_stats (run_id, job_name, finished_at, status, duration_ms, start_latency_ms) \
         SELECT id, job_name, finished_at, status, \
         CASE WHEN started_at IS NULL THEN NULL WHEN finished_at < started_at THEN 0 \
              ELSE finished_at - started_at END, \
         CASE WHEN first_started_at IS NULL THEN NULL WHEN first_started_at < created_at THEN 0 \
              ELSE first_started_at - created_at END \
         FROM runs WHERE id = $1 AND finished_at IS NOT NULL \
         ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The job's latest successful runs, newest first: the baseline of its durations.
pub async fn recent_successes(conn: &mut Conn, job: &str, limit: i64) -> Result<Vec<RunStat>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM run_stats WHERE job_name = $1 AND status = 'succeeded' \
         ORDER BY finished_at DESC, run_id DESC LIMIT $2"
    ))
    .bind(job)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

/// The job's latest finished runs whatever their status, newest first.
pub async fn recent(conn: &mut Conn, job: &str, limit: i64) -> Result<Vec<RunStat>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM run_stats WHERE job_name = $1 \
         ORDER BY finished_at DESC, run_id DESC LIMIT $2"
    ))
    .bind(job)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

/// How many finished runs of the job the statistics hold, and how many of them succeeded.
pub async fn counts(conn: &mut Conn, job: &str) -> Result<(i64, i64)> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, \
         COALESCE(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), 0) AS ok \
         FROM run_stats WHERE job_name = $1",
    )
    .bind(job)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("n")?, row.try_get("ok")?))
}

/// Deletes up to `batch` of the job's rows beyond its newest `keep`; how many went.
pub async fn trim(conn: &mut Conn, job: &str, keep: i64, batch: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM run_stats WHERE run_id IN (SELECT run_id FROM run_stats WHERE job_name = $1 \
         ORDER BY finished_at DESC, run_id DESC LIMIT $2 OFFSET $3)",
    )
    .bind(job)
    .bind(batch)
    .bind(keep)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// What `GET /jobs/{name}/stats` shows, read in one go.
#[derive(Debug, Clone)]
pub struct JobStatRows {
    /// Rows held for the job.
    pub count: i64,
    /// Of those, succeeded.
    pub successes: i64,
    /// The latest successful runs, newest first.
    pub recent_successes: Vec<RunStat>,
    /// The latest runs whatever their status, newest first.
    pub recent: Vec<RunStat>,
}

impl Store {
    /// The statistics of a job: counts, its latest `successes` successful runs and its
    /// latest `recent` runs.
    pub async fn job_stats(&self, job: &str, successes: i64, recent_n: i64) -> Result<JobStatRows> {
        let mut conn = self.read().await?;
        let (count, ok) = counts(&mut conn, job).await?;
        Ok(JobStatRows {
            count,
            successes: ok,
            recent_successes: recent_successes(&mut conn, job, successes).await?,
            recent: recent(&mut conn, job, recent_n).await?,
        })
    }

    /// Jobs whose statistics hold more than `keep` rows.
    pub async fn jobs_over_stats(&self, keep: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT job_name FROM run_stats GROUP BY job_name HAVING COUNT(*) > $1 \
             ORDER BY job_name",
        )
        .bind(keep)
        .fetch_all(&mut self.read().await?.long())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("job_name")?)).collect()
    }
}
