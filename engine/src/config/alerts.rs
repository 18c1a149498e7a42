//! The settings of alert delivery, built from the layered values.

use std::time::Duration;

use super::layers::Layers;
use super::ConfigError;
use crate::runner::AlertConfig;

pub(super) fn alert_config(l: &Layers) -> Result<AlertConfig, ConfigError> {
    let v = &l.values;
    let mut c = AlertConfig::default();
    if let Some(n) = v.alert_max_attempts {
        if !(1..=100).contains(&n) {
            return Err(l.invalid(
                "alert_max_attempts",
                "alert_max_attempts must be between 1 and 100",
            ));
        }
        c.max_attempts = n;
    }
    if let Some(s) = v.alert_timeout_seconds {
        if !(1..=300).contains(&s) {
            return Err(l.invalid(
                "alert_timeout_seconds",
                "alert_timeout_seconds must be between 1 and 300",
            ));
        }
        c.timeout = Duration::from_secs(s);
    }
    if let Some(ms) = v.alert_retry_base_ms {
        if !(10..=3_600_000).contains(&ms) {
            return Err(l.invalid(
                "alert_retry_base_ms",
                "alert_retry_base_ms must be between 10 and 3600000",
            ));
        }
        c.retry_base = Duration::from_millis(ms);
    }
    if let Some(url) = &v.public_url {
        let parsed = reqwest::Url::parse(url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if parsed.is_none() {
            return Err(l.invalid(
                "public_url",
                format!(
                    "public_url `{url}` must be an http:// or https:// URL, e.g. \
                     https://jobdock.example.com"
                ),
            ));
        }
        c.public_url = Some(url.trim_end_matches('/').to_string());
    }
    Ok(c)
}
