//! A run as the API shows it — its row, its attempts and its anomalies — read in one
//! statement. Status polls are the engine's most frequent request; each statement costs a
//! round trip (on SQLite, a hand-over to the connection's thread and back), so the attempts
//! and anomalies come along as JSON arrays built by the database itself.

use std::sync::LazyLock;

use jobdock_types::Anomaly;
use serde::Deserialize;
use sqlx::Row;

use super::{decode, status, AttemptRow, RunRow, COLUMNS};
use crate::store::{from_ms, Dialect, Result, Store, StoreError};

/// SQLite's and PostgreSQL's spellings of "these rows as a JSON array of objects".
fn statement(dialect: Dialect) -> String {
    let attempt = "'attempt', attempt, 'status', status, 'exit_code', exit_code, \
                   'oom_killed', oom_killed, 'reason', reason, 'started_at', started_at, \
                   'finished_at', finished_at";
    let anomaly = "'id', id, 'kind', kind, 'job_name', job_name, 'raised_at', raised_at, \
                   'message', message, 'expected', expected, 'observed', observed, \
                   'closed_at', closed_at, 'closed_reason', closed_reason";
    let (attempts, anomalies) = match dialect {
        Dialect::Sqlite => (
            format!(
                "(SELECT json_group_array(json_object({attempt})) FROM \
                 (SELECT * FROM run_attempts WHERE run_id = runs.id ORDER BY attempt))"
            ),
            format!(
                "(SELECT json_group_array(json_object({anomaly})) FROM \
                 (SELECT * FROM anomalies WHERE run_id = runs.id ORDER BY id))"
            ),
        ),
        Dialect::Postgres => (
            format!(
                "(SELECT COALESCE(json_agg(json_build_object({attempt}) ORDER BY attempt), \
                 '[]')::text FROM run_attempts WHERE run_id = runs.id)"
            ),
            format!(
                "(SELECT COALESCE(json_agg(json_build_object({anomaly}) ORDER BY id), \
                 '[]')::text FROM anomalies WHERE run_id = runs.id)"
            ),
        ),
    };
    format!(
        "SELECT {COLUMNS}, {attempts} AS attempts_json, {anomalies} AS anomalies_json \
         FROM runs WHERE id = $1"
    )
}

#[derive(Deserialize)]
struct AttemptJson {
    attempt: i64,
    status: String,
    exit_code: Option<i64>,
    oom_killed: i64,
    reason: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

#[derive(Deserialize)]
struct AnomalyJson {
    id: i64,
    kind: String,
    job_name: String,
    raised_at: i64,
    message: String,
    expected: Option<f64>,
    observed: Option<f64>,
    closed_at: Option<i64>,
    closed_reason: Option<String>,
}

fn json<T: for<'de> Deserialize<'de>>(r: &sqlx::any::AnyRow, column: &str) -> Result<Vec<T>> {
    let text: String = r.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

static SQLITE: LazyLock<String> = LazyLock::new(|| statement(Dialect::Sqlite));
static POSTGRES: LazyLock<String> = LazyLock::new(|| statement(Dialect::Postgres));

impl Store {
    /// One run with its attempts (in order) and its anomalies (oldest first).
    pub async fn run_view(&self, id: &str) -> Result<(RunRow, Vec<AttemptRow>, Vec<Anomaly>)> {
        let sql = match self.dialect() {
            Dialect::Sqlite => SQLITE.as_str(),
            Dialect::Postgres => POSTGRES.as_str(),
        };
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?
            .ok_or(StoreError::NotFound)?;
        let run = decode(&row)?;
        let attempts = json::<AttemptJson>(&row, "attempts_json")?
            .into_iter()
            .map(|a| {
                Ok(AttemptRow {
                    attempt: a.attempt,
                    status: status(a.status)?,
                    exit_code: a.exit_code,
                    oom_killed: a.oom_killed != 0,
                    reason: a.reason,
                    started_at: a.started_at,
                    finished_at: a.finished_at,
                })
            })
            .collect::<Result<_>>()?;
        let anomalies = json::<AnomalyJson>(&row, "anomalies_json")?
            .into_iter()
            .map(|a| {
                Ok(Anomaly {
                    id: a.id,
                    kind: a.kind.parse().map_err(StoreError::Corrupt)?,
                    run_id: run.id.clone(),
                    job: a.job_name,
                    raised_at: from_ms(a.raised_at),
                    message: a.message,
                    expected: a.expected,
                    observed: a.observed,
                    open: a.closed_at.is_none(),
                    closed_at: a.closed_at.map(from_ms),
                    closed_reason: a.closed_reason,
                })
            })
            .collect::<Result<_>>()?;
        Ok((run, attempts, anomalies))
    }
}
