//! Retention: deleting final runs older than an age, or beyond a per-job count, with
//! everything that hangs off a run (attempts, logs, lock claims and any later table that
//! references `runs (id) ON DELETE CASCADE`). Statistics (`run_stats`) are not pruned here.
//!
//! Whatever the policy says, a run is kept while it is not final, while it still holds its
//! slots (a lost run whose container is not confirmed gone), and until both its trigger and
//! its end are [`MIN_AGE_DAYS`] old: runs hold the idempotency keys that stop a retried
//! trigger (or a schedule tick fired again) from starting a second run. The end time may
//! come from a backend's clock, so the trigger time, the engine's own, counts as well.
//!
//! Deletion goes in small steps, one short transaction each, so that a big prune never
//! holds SQLite's write lock for long. On PostgreSQL a step runs only under an advisory
//! lock it can take at once, so that replicas pruning at the same time do not do the same
//! work twice or wait on each other's rows.

use sqlx::Row;

use super::{Dialect, Result, Store};

/// Runs younger than this many days (since they finished) are never pruned.
pub const MIN_AGE_DAYS: i64 = 7;
const DAY_MS: i64 = 86_400_000;
/// Most runs deleted per step. A step holds SQLite's write lock, and a trigger that comes
/// meanwhile waits for it: steps of 500 runs took about 50 ms here, and the trigger's p99
/// doubled while a large backlog was pruned. Steps of 50 keep that wait to a few ms and still
/// prune about 400 runs a second (a backlog of a million in under an hour).
pub const BATCH_RUNS: usize = 50;
/// Most log lines deleted per step; a run with a longer log loses it in pieces first.
pub const BATCH_LINES: i64 = 5_000;
/// Taken by the replica that prunes; any constant shared by all replicas.
const PRUNE_LOCK: i64 = 0x006a_6f62_7072_756e;

/// Which runs to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Final runs that finished longer ago than this many days go (never fewer than
    /// [`MIN_AGE_DAYS`]).
    pub days: i64,
    /// Of each job's runs, the newest this many stay; older final ones go once they are
    /// [`MIN_AGE_DAYS`] old.
    pub max_runs_per_job: i64,
}

/// Which rule a step applies.
#[derive(Debug, Clone, Copy)]
pub enum Cut<'a> {
    /// Runs past the age limit, of any job.
    Age,
    /// Runs of this job beyond its newest `max_runs_per_job`.
    Count(&'a str),
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Deleted this many runs.
    Deleted(u64),
    /// Deleted part of one long log; its run goes in a later step.
    Trimmed,
    /// Nothing (more) to prune under this rule.
    Nothing,
    /// Another replica is pruning.
    Busy,
}

/// A run that may go, given the floor as parameter `$1`.
const PRUNABLE: &str = "status NOT IN ('queued', 'starting', 'running') AND holds_slot = 0 \
     AND created_at < $1 AND finished_at < $1";

struct Candidate {
    id: String,
    log_lines: i64,
}

impl Store {
    /// Names of the jobs with more than `max_runs` runs.
    pub async fn jobs_over_count(&self, max_runs: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT job_name FROM runs GROUP BY job_name HAVING COUNT(*) > $1 ORDER BY job_name",
        )
        .bind(max_runs)
        .fetch_all(&mut self.read().await?.long())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("job_name")?)).collect()
    }

    /// One step of pruning under `cut`, in its own transaction; `now` in Unix ms.
    pub async fn prune_step(&self, policy: &Policy, cut: Cut<'_>, now: i64) -> Result<Step> {
        let mut tx = self.begin_write().await?.long();
        if self.dialect == Dialect::Postgres {
            let got: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS got")
                .bind(PRUNE_LOCK)
                .fetch_one(&mut *tx)
                .await?
                .try_get("got")?;
            if !got {
                // Ended now rather than on drop: a transaction dropped unfinished keeps its
                // locks until its connection is next used.
                tx.rollback().await?;
                return Ok(Step::Busy);
            }
        }
        let floor = now - MIN_AGE_DAYS * DAY_MS;
        let candidates = match cut {
            Cut::Age => {
                let cutoff = now - policy.days.max(MIN_AGE_DAYS) * DAY_MS;
                past_age(&mut tx, floor, cutoff).await?
            }
            Cut::Count(job) => past_count(&mut tx, job, policy.max_runs_per_job, floor).await?,
        };
        let Some(first) = candidates.first() else {
            tx.commit().await?;
            return Ok(Step::Nothing);
        };
        if first.log_lines > BATCH_LINES {
            let gone = sqlx::query(
                "DELETE FROM run_logs WHERE run_id = $1 AND line_no IN \
                 (SELECT line_no FROM run_logs WHERE run_id = $1 ORDER BY line_no LIMIT $2)",
            )
            .bind(&first.id)
            .bind(BATCH_LINES)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if gone > 0 {
                tx.commit().await?;
                return Ok(Step::Trimmed);
            }
        }
        // At least one run; then as many as fit in the step's budget of log lines.
        let mut lines = 0;
        let ids: Vec<&str> = candidates
            .iter()
            .enumerate()
            .take_while(|(i, c)| {
                lines += c.log_lines;
                *i == 0 || lines <= BATCH_LINES
            })
            .map(|(_, c)| c.id.as_str())
            .collect();
        let deleted = delete_runs(&mut tx, &ids, floor).await?;
        tx.commit().await?;
        Ok(Step::Deleted(deleted))
    }
}

/// Prunable runs that finished before `cutoff`, oldest first.
async fn past_age(
    conn: &mut crate::store::Conn,
    floor: i64,
    cutoff: i64,
) -> Result<Vec<Candidate>> {
    let rows = sqlx::query(&format!(
        "SELECT id, log_lines FROM runs WHERE {PRUNABLE} AND finished_at < $2 \
         ORDER BY finished_at LIMIT $3"
    ))
    .bind(floor)
    .bind(cutoff)
    .bind(BATCH_RUNS as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(candidate).collect()
}

/// Prunable runs of `job` older than its newest `keep` runs.
async fn past_count(
    conn: &mut crate::store::Conn,
    job: &str,
    keep: i64,
    floor: i64,
) -> Result<Vec<Candidate>> {
    let boundary =
        sqlx::query("SELECT seq FROM runs WHERE job_name = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2")
            .bind(job)
            .bind(keep)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(boundary) = boundary else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query(&format!(
        "SELECT id, log_lines FROM runs WHERE {PRUNABLE} AND job_name = $2 AND seq <= $3 \
         ORDER BY seq LIMIT $4"
    ))
    .bind(floor)
    .bind(job)
    .bind(boundary.try_get::<i64, _>("seq")?)
    .bind(BATCH_RUNS as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(candidate).collect()
}

fn candidate(r: &sqlx::any::AnyRow) -> Result<Candidate> {
    Ok(Candidate {
        id: r.try_get("id")?,
        log_lines: r.try_get("log_lines")?,
    })
}

/// Deletes the runs (the cascade takes what references them), checking again that each
/// may go.
async fn delete_runs(conn: &mut crate::store::Conn, ids: &[&str], floor: i64) -> Result<u64> {
    let list = (0..ids.len())
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("DELETE FROM runs WHERE {PRUNABLE} AND id IN ({list})");
    let mut q = sqlx::query(&sql).bind(floor);
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.execute(&mut *conn).await?.rows_affected())
}
