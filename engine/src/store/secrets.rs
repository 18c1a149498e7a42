//! Sealed secret values of jobs. The store never sees a plain value: sealing and opening
//! happen in `crypto`, with the job's name and the key bound as associated data.

use sqlx::Row;

use crate::store::Conn;

use super::{now_ms, Result, Store};

/// One sealed value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The secret's name.
    pub key: String,
    /// Which master key sealed it.
    pub key_id: String,
    /// The AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

fn decode(row: &sqlx::any::AnyRow) -> Result<SealedSecret> {
    Ok(SealedSecret {
        key: row.try_get("key")?,
        key_id: row.try_get("key_id")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
    })
}

/// Sets (inserts or replaces) one secret of a job.
pub async fn put(conn: &mut Conn, job_id: &str, s: &SealedSecret) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_secrets (job_id, key, key_id, nonce, ciphertext, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (job_id, key) DO UPDATE SET key_id = excluded.key_id, \
         nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
    )
    .bind(job_id)
    .bind(&s.key)
    .bind(&s.key_id)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces the whole set of a job's secrets.
pub async fn replace_all(conn: &mut Conn, job_id: &str, all: &[SealedSecret]) -> Result<()> {
    sqlx::query("DELETE FROM job_secrets WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *conn)
        .await?;
    for s in all {
        put(conn, job_id, s).await?;
    }
    Ok(())
}

/// Removes one secret; false when there was none.
pub async fn delete(conn: &mut Conn, job_id: &str, key: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM job_secrets WHERE job_id = $1 AND key = $2")
        .bind(job_id)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The names of a job's secrets, sorted, read on the caller's connection (inside its
/// transaction: asking the pool for a second connection there can starve it).
pub async fn names(conn: &mut Conn, job_id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT key FROM job_secrets WHERE job_id = $1 ORDER BY key")
        .bind(job_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("key")?)).collect()
}

/// Every sealed value that is not sealed under `key_id`, with its job's id and name,
/// for re-sealing under a new master key.
pub async fn not_sealed_with(
    conn: &mut Conn,
    key_id: &str,
) -> Result<Vec<(String, String, SealedSecret)>> {
    let rows = sqlx::query(
        "SELECT s.job_id, j.name, s.key, s.key_id, s.nonce, s.ciphertext \
         FROM job_secrets s JOIN jobs j ON j.id = s.job_id WHERE s.key_id <> $1",
    )
    .bind(key_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("job_id")?, r.try_get("name")?, decode(r)?)))
        .collect()
}

impl Store {
    /// A job's sealed secrets, ordered by name.
    pub async fn secrets(&self, job_id: &str) -> Result<Vec<SealedSecret>> {
        let rows = sqlx::query(
            "SELECT key, key_id, nonce, ciphertext FROM job_secrets WHERE job_id = $1 ORDER BY key",
        )
        .bind(job_id)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// The names of a job's secrets, sorted.
    pub async fn secret_names(&self, job_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT key FROM job_secrets WHERE job_id = $1 ORDER BY key")
            .bind(job_id)
            .fetch_all(&mut self.read().await?)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("key")?)).collect()
    }

    /// One sealed value (with its job's name) for each master key that sealed stored values,
    /// so that start-up can prove the key ring opens every one of them.
    pub async fn sealing_key_samples(&self) -> Result<Vec<(String, SealedSecret)>> {
        let ids = sqlx::query("SELECT DISTINCT key_id FROM job_secrets")
            .fetch_all(&mut self.read().await?)
            .await?;
        let mut samples = Vec::with_capacity(ids.len());
        for id in ids {
            let key_id: String = id.try_get("key_id")?;
            let r = sqlx::query(
                "SELECT j.name, s.key, s.key_id, s.nonce, s.ciphertext FROM job_secrets s \
                 JOIN jobs j ON j.id = s.job_id WHERE s.key_id = $1 LIMIT 1",
            )
            .bind(&key_id)
            .fetch_one(&mut self.read().await?)
            .await?;
            samples.push((r.try_get("name")?, decode(&r)?));
        }
        Ok(samples)
    }
}
