//! Job state between runs: every version of each job's state (the newest is current), and
//! what a run has set but not committed. State is keyed by the job's name, so that a job
//! deleted and created again resumes from its bookmark.

use sqlx::Row;

use crate::store::Conn;

use super::{now_ms, Result, StoreError};

/// Versions kept per job; older ones are pruned on each write.
pub const KEEP_VERSIONS: i64 = 100;

/// A stored version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    /// From 1.
    pub version: i64,
    /// The state, as JSON text.
    pub state: String,
    /// The run that wrote it.
    pub run_id: Option<String>,
    /// The token or run that wrote it.
    pub created_by: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

fn decode(r: &sqlx::any::AnyRow) -> Result<VersionRow> {
    Ok(VersionRow {
        version: r.try_get("version")?,
        state: r.try_get("state")?,
        run_id: r.try_get("run_id")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

const COLUMNS: &str = "version, state, run_id, created_by, created_at";

/// The current version of a job's state, if it has any.
pub async fn current(conn: &mut Conn, job: &str) -> Result<Option<VersionRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM job_states WHERE job_name = $1 ORDER BY version DESC LIMIT 1"
    ))
    .bind(job)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(decode).transpose()
}

/// One version.
pub async fn version(conn: &mut Conn, job: &str, version: i64) -> Result<VersionRow> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM job_states WHERE job_name = $1 AND version = $2"
    ))
    .bind(job)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    decode(&row)
}

/// Writes a new version of a job's state on the caller's write transaction, and prunes
/// versions past [`KEEP_VERSIONS`]. `expected`, when given, must be the current version
/// (0: none yet): otherwise nothing is written and the current version is returned as
/// the error. Returns the new version.
pub async fn write(
    conn: &mut Conn,
    job: &str,
    state: &str,
    expected: Option<i64>,
    run_id: Option<&str>,
    created_by: Option<&str>,
) -> Result<std::result::Result<i64, i64>> {
    let now_version = current(conn, job).await?.map_or(0, |v| v.version);
    if expected.is_some_and(|e| e != now_version) {
        return Ok(Err(now_version));
    }
    let version = now_version + 1;
    // The primary key (job_name, version) refuses a concurrent writer of the same version
    // on PostgreSQL; the caller answers it as a conflict.
    sqlx::query(
        "INSERT INTO job_states (job_name, version, state, run_id, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job)
    .bind(version)
    .bind(state)
    .bind(run_id)
    .bind(created_by)
    .bind(now_ms())
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::on_unique(e, "a concurrent write of this job's state"))?;
    sqlx::query("DELETE FROM job_states WHERE job_name = $1 AND version <= $2")
        .bind(job)
        .bind(version - KEEP_VERSIONS)
        .execute(&mut *conn)
        .await?;
    Ok(Ok(version))
}

/// A job's versions, newest first, below `before` (a version), at most `limit`.
pub async fn versions(
    conn: &mut Conn,
    job: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<VersionRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM job_states WHERE job_name = $1 AND version < $2 \
         ORDER BY version DESC LIMIT $3"
    ))
    .bind(job)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

/// Sets what run `run_id` holds (replacing what it held).
pub async fn hold(conn: &mut Conn, run_id: &str, state: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO run_held_states (run_id, state, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )
    .bind(run_id)
    .bind(state)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What run `run_id` holds, if anything.
pub async fn held(conn: &mut Conn, run_id: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT state FROM run_held_states WHERE run_id = $1")
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("state")).transpose()?)
}

/// Makes what run `run_id` of job `job` holds the job's state (a new version), on the
/// caller's write transaction; the new version, or `None` when the run held nothing.
pub async fn commit_held(conn: &mut Conn, job: &str, run_id: &str) -> Result<Option<i64>> {
    let Some(state) = held(conn, run_id).await? else {
        return Ok(None);
    };
    let by = format!("run {run_id}");
    let version = write(conn, job, &state, None, Some(run_id), Some(&by))
        .await?
        .unwrap_or_else(|current| current);
    sqlx::query("DELETE FROM run_held_states WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(version))
}
