//! Telling every replica that a run has ended, so that long polls on any of them wake at once.
//!
//! On PostgreSQL the transaction that ends a run also sends `NOTIFY` on [`RUN_ENDED`] with the
//! run's id: PostgreSQL delivers it when the transaction commits (never for one rolled back)
//! to every connection listening, this replica's own included. On SQLite only one engine uses
//! the database (see `startup::lock_embedded`), and it learns of its own ends in-process.

use std::sync::Arc;

use crate::store::Conn;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgListener;

use super::{Result, Store};

/// The channel that carries the ids of ended runs.
pub const RUN_ENDED: &str = "jobdock_run_ended";

/// Announces, on `conn` inside the transaction that ended it, that run `id` has ended.
pub async fn run_ended(conn: &mut Conn, id: &str) -> Result<()> {
    if conn.dialect() == super::Dialect::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(RUN_ENDED)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What a [`RunEnds`] heard.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// This run has ended, on some replica.
    Ended(String),
    /// The connection was lost and is listening again: ends in between were missed.
    Reconnected,
}

/// A connection of its own that hears the ends of runs of every replica.
pub struct RunEnds {
    listener: PgListener,
}

impl RunEnds {
    /// The next thing heard.
    pub async fn next(&mut self) -> Result<Heard> {
        // With `eager_reconnect` (sqlx's default) a lost connection is made again, and
        // listening again, before `None` is returned.
        Ok(match self.listener.try_recv().await? {
            Some(n) => Heard::Ended(n.payload().to_owned()),
            None => Heard::Reconnected,
        })
    }
}

impl Store {
    /// Listens for the ends of runs on every replica; `None` on SQLite, where there are no
    /// other replicas.
    pub async fn listen_for_run_ends(&self) -> Result<Option<RunEnds>> {
        let Some(url) = &self.listen_url else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(url.expose_secret()).await?;
        listener.listen(RUN_ENDED).await?;
        Ok(Some(RunEnds { listener }))
    }
}

/// The URL a listener connects with (PostgreSQL only).
pub(super) type ListenUrl = Option<Arc<SecretString>>;
