//! API tokens, stored only as hashes.

use sqlx::Row;

use crate::store::Conn;

use super::{now_ms, Result, Store, StoreError};

/// A stored token (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The token's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `admin`, `operator`, `trigger` or `read`.
    pub scope: String,
    /// Job-name patterns it is restricted to, or `None` for every job.
    pub jobs: Option<Vec<String>>,
    /// SHA-256 of the token's value.
    pub token_hash: Vec<u8>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub last_used_at: Option<i64>,
}

/// A token to insert.
#[derive(Debug, Clone)]
pub struct NewTokenRow<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its scope.
    pub scope: &'a str,
    /// Job-name patterns.
    pub jobs: Option<&'a [String]>,
    /// SHA-256 of its value.
    pub token_hash: &'a [u8],
}

const COLUMNS: &str = "id, name, scope, jobs, token_hash, created_at, last_used_at";

fn decode(row: &sqlx::any::AnyRow) -> Result<TokenRow> {
    let jobs: Option<String> = row.try_get("jobs")?;
    let jobs = jobs
        .map(|j| serde_json::from_str(&j))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("token job patterns: {e}")))?;
    Ok(TokenRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: row.try_get("scope")?,
        jobs,
        token_hash: row.try_get("token_hash")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

/// Inserts a token.
pub async fn insert(conn: &mut Conn, new: NewTokenRow<'_>) -> Result<TokenRow> {
    let jobs = new
        .jobs
        .map(|j| serde_json::to_string(j).expect("strings serialise"));
    let row = sqlx::query(&format!(
        "INSERT INTO api_tokens (id, name, scope, jobs, token_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(new.name)
    .bind(new.scope)
    .bind(jobs)
    .bind(new.token_hash)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| StoreError::on_unique(e, "a token with this value"))?;
    decode(&row)
}

/// Revokes a live token; false when there was none.
pub async fn revoke(conn: &mut Conn, id: &str) -> Result<Option<TokenRow>> {
    let row = sqlx::query(&format!(
        "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(now_ms())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(decode).transpose()
}

/// Whether any token was ever created (revoked ones count: bootstrap happens once).
pub async fn any_exists(conn: &mut Conn) -> Result<bool> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

impl Store {
    /// The live token with this hash.
    pub async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRow>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&mut self.read().await?)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Live tokens ordered by id (creation order), after `after`, at most `limit`.
    pub async fn tokens_after(&self, after: Option<&str>, limit: i64) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE revoked_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Records that a token was used, at most once a minute per token so that reads stay reads.
    pub async fn token_used(&self, id: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(&mut self.write_alone().await?)
        .await?;
        Ok(())
    }
}
