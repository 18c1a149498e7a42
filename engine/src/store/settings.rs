//! Small engine-wide settings, such as the installation id that labels every container.

use sqlx::Row;

use super::{Result, Store};

impl Store {
    /// The value of a setting, creating it with `init()` the first time, atomically:
    /// two replicas starting together end up with the same value.
    pub async fn setting_or_init(
        &self,
        key: &str,
        init: impl FnOnce() -> String,
    ) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(init())
        .execute(&mut self.write_alone().await?)
        .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&mut self.read().await?)
            .await?;
        Ok(row.try_get("value")?)
    }
}
