//! What a run's supervisor reads of its run while it runs: a few columns each, not the whole
//! run with its definition.

use jobdock_types::RunStatus;
use sqlx::Row;

use super::{decode_mark, status, MARK_COLUMNS};
use crate::store::{Result, Store, StoreError};

/// What a supervisor reads of its run when the attempt ends: whether the run is still its
/// own, and how much log the cap dropped.
#[derive(Debug, Clone)]
pub struct EndCheck {
    /// The run's status now.
    pub status: RunStatus,
    /// The replica supervising it now.
    pub lease_owner: Option<String>,
    /// Log bytes dropped past the cap.
    pub log_dropped: i64,
}

impl Store {
    /// How far a run's log is stored: its bytes and its mark (a supervisor's log stream
    /// resumes from them), without reading the rest of the run.
    pub async fn log_position(&self, id: &str) -> Result<(i64, crate::store::logs::LogMark)> {
        let row = sqlx::query(&format!(
            "SELECT log_bytes, {MARK_COLUMNS} FROM runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut self.read().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok((row.try_get("log_bytes")?, decode_mark(&row)?))
    }

    /// What [`EndCheck`] says of run `id`.
    pub async fn end_check(&self, id: &str) -> Result<EndCheck> {
        let row = sqlx::query("SELECT status, lease_owner, log_dropped FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(EndCheck {
            status: status(row.try_get("status")?)?,
            lease_owner: row.try_get("lease_owner")?,
            log_dropped: row.try_get("log_dropped")?,
        })
    }
}
