//! The audit log: every change to a job, a secret or a token, and every trigger and cancel,
//! with the token that made it. Written in the same transaction as the change it records.

use jobdock_types::AuditEntry;
use sqlx::Row;

use crate::store::Conn;

use super::{from_ms, now_ms, Result, Store};

/// An entry to record.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry<'a> {
    /// The acting token's id.
    pub token_id: Option<&'a str>,
    /// The acting token's name.
    pub token_name: Option<&'a str>,
    /// E.g. `job.create`.
    pub action: &'a str,
    /// E.g. the job's name.
    pub target: &'a str,
    /// More (never a secret value).
    pub detail: serde_json::Value,
    /// The request's id.
    pub request_id: Option<&'a str>,
}

/// Which entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Only entries older than this id (the cursor).
    pub before_id: Option<i64>,
    /// Only this action.
    pub action: Option<&'a str>,
    /// Only this target.
    pub target: Option<&'a str>,
}

/// Records one entry.
pub async fn record(conn: &mut Conn, e: NewAuditEntry<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, token_id, token_name, action, target, detail, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now_ms())
    .bind(e.token_id)
    .bind(e.token_name)
    .bind(e.action)
    .bind(e.target)
    .bind(e.detail.to_string())
    .bind(e.request_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Entries newest first.
    pub async fn audit(&self, f: AuditFilter<'_>, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, token_id, token_name, action, target, detail, request_id FROM audit_log \
             WHERE id < $1 AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR target = $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(f.before_id.unwrap_or(i64::MAX))
        .bind(f.action)
        .bind(f.target)
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: from_ms(r.try_get("at")?),
                    token_id: r.try_get("token_id")?,
                    token_name: r.try_get("token_name")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    request_id: r.try_get("request_id")?,
                })
            })
            .collect()
    }
}
