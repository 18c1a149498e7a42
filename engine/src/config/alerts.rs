//! The settings of alert delivery, resolved from `serve`'s flags and the settings file.

use std::time::Duration;

use super::{non_empty, ConfigError, FileSettings, ServeArgs};
use crate::runner::AlertConfig;

pub(super) fn alert_config(
    args: &ServeArgs,
    file: &FileSettings,
) -> Result<AlertConfig, ConfigError> {
    let mut c = AlertConfig::default();
    if let Some(n) = args.alert_max_attempts.or(file.alert_max_attempts) {
        if !(1..=100).contains(&n) {
            return Err(ConfigError(
                "alert_max_attempts must be between 1 and 100".into(),
            ));
        }
        c.max_attempts = n;
    }
    if let Some(s) = args.alert_timeout_seconds.or(file.alert_timeout_seconds) {
        if !(1..=300).contains(&s) {
            return Err(ConfigError(
                "alert_timeout_seconds must be between 1 and 300".into(),
            ));
        }
        c.timeout = Duration::from_secs(s);
    }
    if let Some(ms) = args.alert_retry_base_ms.or(file.alert_retry_base_ms) {
        if !(10..=3_600_000).contains(&ms) {
            return Err(ConfigError(
                "alert_retry_base_ms must be between 10 and 3600000".into(),
            ));
        }
        c.retry_base = Duration::from_millis(ms);
    }
    if let Some(url) = non_empty(&args.public_url).or_else(|| file.public_url.clone()) {
        let parsed = reqwest::Url::parse(&url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if parsed.is_none() {
            return Err(ConfigError(format!(
                "public_url `{url}` must be an http:// or https:// URL, e.g. https://jobdock.example.com"
            )));
        }
        c.public_url = Some(url.trim_end_matches('/').to_string());
    }
    Ok(c)
}
