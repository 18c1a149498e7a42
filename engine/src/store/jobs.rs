//! Job definitions. A deleted job keeps its row (so its runs stay readable) but frees its name.

use jobdock_types::JobSpec;
use sqlx::Row;

use crate::store::Conn;

use super::{from_ms, now_ms, Result, Store, StoreError};

/// A stored job.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// Internal id; runs refer to it, so a later job of the same name never mixes with them.
    pub id: String,
    /// The job's name.
    pub name: String,
    /// The definition, defaults filled in, secrets left out.
    pub spec: JobSpec,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// The definition (its `secrets` are ignored: they are stored sealed, apart).
    pub spec: &'a JobSpec,
}

const COLUMNS: &str = "id, name, spec, created_at, updated_at";

fn decode(row: &sqlx::any::AnyRow) -> Result<JobRow> {
    let spec: String = row.try_get("spec")?;
    let spec = serde_json::from_str(&spec)
        .map_err(|e| StoreError::Corrupt(format!("job definition: {e}")))?;
    Ok(JobRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        spec,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn encode(spec: &JobSpec) -> String {
    let mut spec = spec.clone();
    spec.secrets = None;
    serde_json::to_string(&spec).expect("a JobSpec always serialises")
}

/// Inserts a job; a live job of the same name is a conflict.
pub async fn insert(conn: &mut Conn, new: NewJob<'_>) -> Result<JobRow> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let backend = new.spec.backend.map(|b| b.as_str()).unwrap_or("docker");
    let row = sqlx::query(&format!(
        "INSERT INTO jobs (id, name, spec, backend, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) RETURNING {COLUMNS}"
    ))
    .bind(&id)
    .bind(&new.spec.name)
    .bind(encode(new.spec))
    .bind(backend)
    .bind(now)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| StoreError::on_unique(e, "a job with this name"))?;
    decode(&row)
}

/// Replaces a live job's definition.
pub async fn update(conn: &mut Conn, id: &str, spec: &JobSpec) -> Result<JobRow> {
    let backend = spec.backend.map(|b| b.as_str()).unwrap_or("docker");
    let row = sqlx::query(&format!(
        "UPDATE jobs SET spec = $1, backend = $2, updated_at = $3 \
         WHERE id = $4 AND deleted_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(encode(spec))
    .bind(backend)
    .bind(now_ms())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    decode(&row)
}

/// Marks a job's definition as changed (a secret was set or removed).
pub async fn touch(conn: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("UPDATE jobs SET updated_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes a live job: frees its name and drops its secrets; the row stays for its runs.
pub async fn soft_delete(conn: &mut Conn, id: &str) -> Result<()> {
    let done = sqlx::query("UPDATE jobs SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
        .bind(now_ms())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query("DELETE FROM job_secrets WHERE job_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The live job of this name, locked for update where the database can (PostgreSQL).
pub async fn get_for_update(conn: &mut Conn, store: &Store, name: &str) -> Result<JobRow> {
    let lock = match store.dialect() {
        super::Dialect::Postgres => " FOR UPDATE",
        super::Dialect::Sqlite => "",
    };
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE name = $1 AND deleted_at IS NULL{lock}"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    decode(&row)
}

impl Store {
    /// The live job of this name.
    pub async fn job(&self, name: &str) -> Result<JobRow> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE name = $1 AND deleted_at IS NULL"
        ))
        .bind(name)
        .fetch_optional(&mut self.read().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        decode(&row)
    }

    /// Live jobs ordered by name, after `after`, at most `limit`.
    pub async fn jobs_after(&self, after: Option<&str>, limit: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE deleted_at IS NULL AND name > $1 \
             ORDER BY name LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode).collect()
    }
}

/// Times of a row as API date-times.
impl JobRow {
    /// `created_at` as a date-time.
    pub fn created(&self) -> chrono::DateTime<chrono::Utc> {
        from_ms(self.created_at)
    }
    /// `updated_at` as a date-time.
    pub fn updated(&self) -> chrono::DateTime<chrono::Utc> {
        from_ms(self.updated_at)
    }
}
