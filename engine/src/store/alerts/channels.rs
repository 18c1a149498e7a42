//! Notification channels and their sealed values. The store never sees a plain URL or signing
//! secret: sealing and opening happen in `crypto`, bound to the channel's id.

use jobdock_types::{ChannelKind, ChannelSubscription};
use sqlx::Row;

use crate::store::Conn;

use crate::store::{now_ms, Dialect, Result, SealedSecret, Store, StoreError};

/// A stored channel (never its URL or signing secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    /// Internal id; sealed values are bound to it.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Webhook or Slack.
    pub kind: ChannelKind,
    /// The URL's scheme and host, for people.
    pub url_shown: String,
    /// For people.
    pub description: Option<String>,
    /// The channel-wide subscription.
    pub subscribe: Option<ChannelSubscription>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// The fields of a channel that a create or a change writes.
#[derive(Debug, Clone)]
pub struct ChannelFields<'a> {
    /// Webhook or Slack.
    pub kind: ChannelKind,
    /// The URL's scheme and host.
    pub url_shown: &'a str,
    /// For people.
    pub description: Option<&'a str>,
    /// The channel-wide subscription.
    pub subscribe: Option<&'a ChannelSubscription>,
}

const COLUMNS: &str = "id, name, kind, url_shown, description, subscribe_jobs, subscribe_on, \
                       created_at, updated_at";

fn decode(r: &sqlx::any::AnyRow) -> Result<ChannelRow> {
    let kind: String = r.try_get("kind")?;
    let jobs: Option<String> = r.try_get("subscribe_jobs")?;
    let on: Option<String> = r.try_get("subscribe_on")?;
    let subscribe = match (jobs, on) {
        (Some(jobs), Some(on)) => Some(ChannelSubscription {
            jobs,
            on: serde_json::from_str(&on)
                .map_err(|e| StoreError::Corrupt(format!("channel subscription: {e}")))?,
        }),
        _ => None,
    };
    Ok(ChannelRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        url_shown: r.try_get("url_shown")?,
        description: r.try_get("description")?,
        subscribe,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn subscribe_columns(s: Option<&ChannelSubscription>) -> (Option<&str>, Option<String>) {
    match s {
        Some(s) => (
            Some(s.jobs.as_str()),
            Some(serde_json::to_string(&s.on).expect("events serialise")),
        ),
        None => (None, None),
    }
}

/// Inserts a channel with the id its values were sealed for; a name in use is a conflict.
pub async fn insert(
    conn: &mut Conn,
    id: &str,
    name: &str,
    f: &ChannelFields<'_>,
) -> Result<ChannelRow> {
    let (jobs, on) = subscribe_columns(f.subscribe);
    let row = sqlx::query(&format!(
        "INSERT INTO alert_channels (id, name, kind, url_shown, description, subscribe_jobs, \
         subscribe_on, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(f.kind.as_str())
    .bind(f.url_shown)
    .bind(f.description)
    .bind(jobs)
    .bind(on)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| StoreError::on_unique(e, "a channel with this name"))?;
    decode(&row)
}

/// Replaces a channel's fields.
pub async fn update(conn: &mut Conn, id: &str, f: &ChannelFields<'_>) -> Result<ChannelRow> {
    let (jobs, on) = subscribe_columns(f.subscribe);
    let row = sqlx::query(&format!(
        "UPDATE alert_channels SET kind = $1, url_shown = $2, description = $3, \
         subscribe_jobs = $4, subscribe_on = $5, updated_at = $6 WHERE id = $7 RETURNING {COLUMNS}"
    ))
    .bind(f.kind.as_str())
    .bind(f.url_shown)
    .bind(f.description)
    .bind(jobs)
    .bind(on)
    .bind(now_ms())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    decode(&row)
}

/// Deletes a channel, its sealed values and its outbox rows.
pub async fn delete(conn: &mut Conn, id: &str) -> Result<()> {
    // Children first, rather than trusting the cascade: SQLite enforces foreign keys only
    // where the connection turned them on.
    for sql in [
        "DELETE FROM alert_attempts WHERE outbox_id IN \
         (SELECT id FROM alert_outbox WHERE channel_id = $1)",
        "DELETE FROM alert_outbox WHERE channel_id = $1",
        "DELETE FROM alert_channel_secrets WHERE channel_id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    }
    let done = sqlx::query("DELETE FROM alert_channels WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

fn lock_clause(store: &Store, mode: &'static str) -> &'static str {
    match store.dialect() {
        Dialect::Postgres => mode,
        Dialect::Sqlite => "",
    }
}

/// The channel of this name, locked for update where the database can (PostgreSQL).
pub async fn get_for_update(conn: &mut Conn, store: &Store, name: &str) -> Result<ChannelRow> {
    let lock = lock_clause(store, " FOR UPDATE");
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM alert_channels WHERE name = $1{lock}"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    decode(&row)
}

/// Whether a channel of this name exists; on PostgreSQL it is share-locked until the
/// transaction ends, so that it cannot be deleted while a job that names it is stored.
pub async fn exists_for_share(conn: &mut Conn, store: &Store, name: &str) -> Result<bool> {
    let lock = lock_clause(store, " FOR SHARE");
    let row = sqlx::query(&format!(
        "SELECT id FROM alert_channels WHERE name = $1{lock}"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// Every channel, by name, read on the caller's connection.
pub async fn all(conn: &mut Conn) -> Result<Vec<ChannelRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM alert_channels ORDER BY name"
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

/// The live jobs whose `alerts` name channel `name`, sorted.
pub async fn subscribing_jobs(conn: &mut Conn, name: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Alerts {
        #[serde(default)]
        alerts: Vec<jobdock_types::AlertSubscription>,
    }
    let rows = sqlx::query(
        "SELECT name, spec FROM jobs WHERE deleted_at IS NULL AND spec LIKE $1 ORDER BY name",
    )
    .bind("%\"alerts\"%")
    .fetch_all(&mut *conn)
    .await?;
    let mut jobs = Vec::new();
    for r in rows {
        let spec: String = r.try_get("spec")?;
        let names = serde_json::from_str::<Alerts>(&spec).map(|a| a.alerts);
        if names.is_ok_and(|a| a.iter().any(|s| s.channel == name)) {
            jobs.push(r.try_get("name")?);
        }
    }
    Ok(jobs)
}

/// Sets (inserts or replaces) one sealed value of a channel.
pub async fn put_sealed(conn: &mut Conn, channel_id: &str, s: &SealedSecret) -> Result<()> {
    sqlx::query(
        "INSERT INTO alert_channel_secrets (channel_id, key, key_id, nonce, ciphertext, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (channel_id, key) DO UPDATE SET key_id = excluded.key_id, \
         nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
    )
    .bind(channel_id)
    .bind(&s.key)
    .bind(&s.key_id)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn decode_sealed(r: &sqlx::any::AnyRow) -> Result<SealedSecret> {
    Ok(SealedSecret {
        key: r.try_get("key")?,
        key_id: r.try_get("key_id")?,
        nonce: r.try_get("nonce")?,
        ciphertext: r.try_get("ciphertext")?,
    })
}

/// A channel's sealed values, read on the caller's connection.
pub async fn sealed(conn: &mut Conn, channel_id: &str) -> Result<Vec<SealedSecret>> {
    let rows = sqlx::query(
        "SELECT key, key_id, nonce, ciphertext FROM alert_channel_secrets \
         WHERE channel_id = $1 ORDER BY key",
    )
    .bind(channel_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode_sealed).collect()
}

/// Every sealed channel value not sealed under `key_id`, with its channel's id, for
/// re-sealing under a new master key.
pub async fn not_sealed_with(conn: &mut Conn, key_id: &str) -> Result<Vec<(String, SealedSecret)>> {
    let rows = sqlx::query(
        "SELECT channel_id, key, key_id, nonce, ciphertext FROM alert_channel_secrets \
         WHERE key_id <> $1",
    )
    .bind(key_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("channel_id")?, decode_sealed(r)?)))
        .collect()
}

impl Store {
    /// The channel of this name.
    pub async fn channel(&self, name: &str) -> Result<ChannelRow> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM alert_channels WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut self.read().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        decode(&row)
    }

    /// Channels ordered by name, after `after`, at most `limit`.
    pub async fn channels_after(&self, after: Option<&str>, limit: i64) -> Result<Vec<ChannelRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM alert_channels WHERE name > $1 ORDER BY name LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// A channel's sealed values.
    pub async fn channel_sealed(&self, channel_id: &str) -> Result<Vec<SealedSecret>> {
        let mut conn = self.read().await?;
        sealed(&mut conn, channel_id).await
    }

    /// One sealed channel value (with its channel's id) for each master key that sealed
    /// channel values, so that start-up can prove the key ring opens every one of them.
    pub async fn channel_sealing_key_samples(&self) -> Result<Vec<(String, SealedSecret)>> {
        let ids = sqlx::query("SELECT DISTINCT key_id FROM alert_channel_secrets")
            .fetch_all(&mut self.read().await?)
            .await?;
        let mut samples = Vec::with_capacity(ids.len());
        for id in ids {
            let key_id: String = id.try_get("key_id")?;
            let r = sqlx::query(
                "SELECT channel_id, key, key_id, nonce, ciphertext FROM alert_channel_secrets \
                 WHERE key_id = $1 LIMIT 1",
            )
            .bind(&key_id)
            .fetch_one(&mut self.read().await?)
            .await?;
            samples.push((r.try_get("channel_id")?, decode_sealed(&r)?));
        }
        Ok(samples)
    }
}
