//! The queue as the dispatcher reads it on each pass: by job, since runs of one job start
//! in the order they came (once one must wait, the later ones wait behind it). A pass reads
//! the first due run of each job, and a job's next run only after it claimed the one before.
//! Reading every queued run on each pass instead cost 41.7 ms of engine CPU per run with
//! 5,000 queued over 50 jobs (14.4 ms this way): each pass decoded the same thousands of
//! runs that could not start. A trigger reads its job's queue too, to count it
//! ([`unfinished_of_job`]).

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::Conn;

use super::super::{now_ms, Dialect, Result, Store};
use jobdock_types::RunEventKind;

/// A queued run that may start now, as a dispatch pass first sees it. The whole run is read
/// only for the runs that may start.
#[derive(Debug, Clone)]
pub struct DueRun {
    /// Queue order.
    pub seq: i64,
    /// The run's id.
    pub id: String,
    /// Its job's id.
    pub job_id: String,
    /// Its job's name.
    pub job_name: String,
    /// The attempt it waits to start.
    pub attempt: i64,
    /// The backend it runs on.
    pub backend: String,
    /// The queue order of its job's last due run: when it is `seq`, nothing of the job
    /// waits behind it.
    pub last_seq: i64,
    /// Its job's `max_parallel` now (1 when unset): raising it lets queued runs start.
    pub max_parallel: i64,
}

/// `status = 'queued'`, not waiting out a retry's backoff, on one of the `backends` bound
/// as `$1`…`$n`, with now bound as `$n+1` ([`bind_due`]); `t.` qualifies the columns with
/// the table's alias `t` (empty for none).
fn due_where(backends: usize, t: &str) -> String {
    format!(
        "{t}status = 'queued' AND ({t}next_attempt_at IS NULL OR {t}next_attempt_at <= ${}) \
         AND {t}backend IN ({})",
        backends + 1,
        super::super::placeholders(backends)
    )
}

fn bind_due<'q>(
    sql: &'q str,
    backends: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut q = sqlx::query(sql);
    for b in backends {
        q = q.bind(b.as_str());
    }
    q.bind(now_ms())
}

fn due_run(r: &AnyRow, last_seq: i64, max_parallel: i64) -> Result<DueRun> {
    Ok(DueRun {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        job_name: r.try_get("job_name")?,
        attempt: r.try_get("attempt")?,
        backend: r.try_get("backend")?,
        last_seq,
        max_parallel,
    })
}

/// The first due run of each job with due runs on one of `backends`, oldest first.
///
/// Job by job, each a probe of the partial index `runs (job_id, seq) WHERE status =
/// 'queued'` from either end: a pass costs as much as there are jobs, however long the
/// queue. Grouping every queued run by job instead read all of them on every pass: with
/// 5,000 queued over 50 jobs 2.25 ms on SQLite and 2.5 ms on PostgreSQL, against 0.15 ms and
/// 0.5 ms this way. PostgreSQL is given `LATERAL`, which SQLite lacks: the statement in
/// SQLite's form was planned there as a scan of every run until its statistics said
/// otherwise. Each job's `max_parallel` is read from its definition here, by the database,
/// rather than by a statement of its own whose definitions the engine decoded (71 µs a
/// pass with 50 jobs, in the statement trace of 1,000 runs dispatched).
pub async fn heads(conn: &mut Conn, backends: &[String]) -> Result<Vec<DueRun>> {
    if backends.is_empty() {
        return Ok(Vec::new());
    }
    let n = backends.len();
    let (first, last) = (due_where(n, "f."), due_where(n, "l."));
    let sql = match conn.dialect() {
        Dialect::Sqlite => format!(
            "SELECT r.seq, r.id, r.job_id, r.job_name, r.attempt, r.backend, h.last_seq, \
                    h.max_parallel \
             FROM (SELECT json_extract(j.spec, '$.max_parallel') AS max_parallel, \
               (SELECT f.seq FROM runs f WHERE f.job_id = j.id AND {first} \
                ORDER BY f.seq LIMIT 1) AS first_seq, \
               (SELECT l.seq FROM runs l WHERE l.job_id = j.id AND {last} \
                ORDER BY l.seq DESC LIMIT 1) AS last_seq \
               FROM jobs j) h \
             JOIN runs r ON r.seq = h.first_seq ORDER BY r.seq"
        ),
        Dialect::Postgres => format!(
            "SELECT r.seq, r.id, r.job_id, r.job_name, r.attempt, r.backend, l.seq AS last_seq, \
                    (j.spec::jsonb ->> 'max_parallel')::bigint AS max_parallel \
             FROM jobs j \
             CROSS JOIN LATERAL (SELECT f.seq, f.id, f.job_id, f.job_name, f.attempt, f.backend \
               FROM runs f WHERE f.job_id = j.id AND {first} ORDER BY f.seq LIMIT 1) r \
             CROSS JOIN LATERAL (SELECT l.seq FROM runs l WHERE l.job_id = j.id AND {last} \
               ORDER BY l.seq DESC LIMIT 1) l \
             ORDER BY r.seq"
        ),
    };
    let rows = bind_due(&sql, backends).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            let max_parallel: Option<i64> = r.try_get("max_parallel")?;
            due_run(r, r.try_get("last_seq")?, max_parallel.unwrap_or(1))
        })
        .collect()
}

/// Whether any run is due on `backends`, read outside a transaction: the first queued run
/// in queue order that is due, if any (a probe of the queue's index by status).
pub async fn any_due(store: &Store, backends: &[String]) -> Result<bool> {
    if backends.is_empty() {
        return Ok(false);
    }
    let sql = format!(
        "SELECT seq FROM runs WHERE {} ORDER BY seq LIMIT 1",
        due_where(backends.len(), "")
    );
    Ok(bind_due(&sql, backends)
        .fetch_optional(&mut store.read().await?)
        .await?
        .is_some())
}

/// The due run of `before`'s job that comes after it, up to the job's last due run as the
/// pass first saw it (a run triggered since waits for the next pass), if any.
pub async fn next_of_job(
    conn: &mut Conn,
    backends: &[String],
    before: &DueRun,
) -> Result<Option<DueRun>> {
    if backends.is_empty() || before.last_seq <= before.seq {
        return Ok(None);
    }
    let n = backends.len();
    let sql = format!(
        "SELECT seq, id, job_id, job_name, attempt, backend FROM runs \
         WHERE {} AND job_id = ${} AND seq > ${} AND seq <= ${} ORDER BY seq LIMIT 1",
        due_where(n, ""),
        n + 2,
        n + 3,
        n + 4,
    );
    let row = bind_due(&sql, backends)
        .bind(&before.job_id)
        .bind(before.seq)
        .bind(before.last_seq)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref()
        .map(|r| due_run(r, before.last_seq, before.max_parallel))
        .transpose()
}

/// Notes on the queued runs of `job_id` after `after_seq` up to `upto_seq` that they wait
/// for `reason` (behind the run at `after_seq`), with a `waiting` event for each run whose
/// reason changed — in two statements however many runs there are.
pub async fn note_behind(
    conn: &mut Conn,
    job_id: &str,
    after_seq: i64,
    upto_seq: i64,
    reason: &str,
) -> Result<()> {
    const CHANGED: &str = "job_id = $1 AND status = 'queued' AND seq > $2 AND seq <= $3 \
                           AND (waiting_for IS NULL OR waiting_for <> $4)";
    sqlx::query(&format!(
        "INSERT INTO run_events (run_id, attempt, at, kind, message, detail) \
         SELECT id, attempt, $5, $6, $4, NULL FROM runs WHERE {CHANGED} ORDER BY seq"
    ))
    .bind(job_id)
    .bind(after_seq)
    .bind(upto_seq)
    .bind(reason)
    .bind(now_ms())
    .bind(RunEventKind::Waiting.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!("UPDATE runs SET waiting_for = $4 WHERE {CHANGED}"))
        .bind(job_id)
        .bind(after_seq)
        .bind(upto_seq)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What holds slots now: how many runs per job, per backend and per lock, and the
/// capacities set on locks (a lock without one has capacity 1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    /// Runs holding a slot, by job id.
    pub jobs: HashMap<String, i64>,
    /// Runs holding a slot, by backend.
    pub backends: HashMap<String, i64>,
    /// Runs holding each lock, by key.
    pub locks: HashMap<String, i64>,
    /// Capacities set, by key.
    pub capacities: HashMap<String, i64>,
}

/// The runs holding a slot joined to the locks they hold, as `FROM` and `WHERE` text: read
/// from the runs (`runs_holding`) to their lock rows, so that it costs as much as runs hold
/// slots. A queued run has its lock rows too, and both databases, left to choose, read every
/// lock row: SQLite looking its run up, with 5,000 runs queued 3.7 ms a dispatch pass
/// against 0.04 ms; PostgreSQL hashing them, 0.5 against 0.35 ms. `CROSS JOIN` is SQLite's
/// way of fixing the order; `OFFSET 0` keeps PostgreSQL from flattening the subquery.
pub(crate) fn holding_locks(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "runs r CROSS JOIN run_locks rl WHERE rl.run_id = r.id AND r.holds_slot = 1"
        }
        Dialect::Postgres => {
            "runs r CROSS JOIN LATERAL \
             (SELECT key FROM run_locks WHERE run_id = r.id OFFSET 0) rl WHERE r.holds_slot = 1"
        }
    }
}

/// What holds slots now, in one statement: a dispatch pass reads it once, whatever the
/// number of jobs waiting (counting per job and per lock cost three statements per waiting
/// job on every pass).
pub async fn held(conn: &mut Conn) -> Result<Held> {
    let holding = holding_locks(conn.dialect());
    let rows = sqlx::query(&format!(
        "SELECT 'job' AS kind, job_id AS name, COUNT(*) AS n FROM runs \
         WHERE holds_slot = 1 GROUP BY job_id \
         UNION ALL SELECT 'backend', backend, COUNT(*) FROM runs \
         WHERE holds_slot = 1 GROUP BY backend \
         UNION ALL SELECT 'lock', rl.key, COUNT(*) FROM {holding} GROUP BY rl.key \
         UNION ALL SELECT 'capacity', key, capacity FROM locks"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut held = Held::default();
    for r in &rows {
        let kind: String = r.try_get("kind")?;
        let map = match kind.as_str() {
            "job" => &mut held.jobs,
            "backend" => &mut held.backends,
            "lock" => &mut held.locks,
            _ => &mut held.capacities,
        };
        map.insert(r.try_get("name")?, r.try_get("n")?);
    }
    Ok(held)
}

/// How many runs of a job are unfinished, how many of them queued, and the oldest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// Queued, starting or running.
    pub count: i64,
    /// Of those, queued.
    pub queued: i64,
    /// The oldest of them.
    pub first: Option<String>,
}

/// A job's [`Unfinished`] runs, counted in one statement: a trigger asks on every call, and
/// reading the rows themselves made each trigger cost as much as the job's queue was long.
///
/// Each part reads one of the job's partial indexes: its queue (`runs_queued_job`) and the
/// runs holding a slot (`runs_holding`; every starting or running run holds one). Asked as
/// `status IN ('queued', 'starting', 'running')`, both databases read every unfinished run
/// of every job by status instead: with 5,000 runs queued, 386 µs a trigger against 10 µs
/// (SQLite), in the write lock.
pub async fn unfinished_of_job(conn: &mut Conn, job_id: &str) -> Result<Unfinished> {
    const QUEUED: &str = "job_id = $1 AND status = 'queued'";
    const ACTIVE: &str = "job_id = $1 AND holds_slot = 1 AND status IN ('starting', 'running')";
    let row = sqlx::query(&format!(
        "SELECT (SELECT COUNT(*) FROM runs WHERE {QUEUED}) AS queued, \
                (SELECT COUNT(*) FROM runs WHERE {ACTIVE}) AS active, \
                (SELECT id FROM ( \
                   SELECT id, seq FROM (SELECT id, seq FROM runs WHERE {QUEUED} \
                                        ORDER BY seq LIMIT 1) q \
                   UNION ALL \
                   SELECT id, seq FROM (SELECT id, seq FROM runs WHERE {ACTIVE} \
                                        ORDER BY seq LIMIT 1) a \
                 ) f ORDER BY seq LIMIT 1) AS first"
    ))
    .bind(job_id)
    .fetch_one(&mut *conn)
    .await?;
    let queued: i64 = row.try_get("queued")?;
    let active: i64 = row.try_get("active")?;
    Ok(Unfinished {
        count: queued + active,
        queued,
        first: row.try_get("first")?,
    })
}
