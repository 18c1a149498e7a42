//! The alert delivery loop. Every replica claims due alerts from the outbox under a lease
//! (so that each alert is sent by one replica), sends them, and records every attempt. A
//! failed attempt is tried again with growing backoff until the configured number of
//! attempts, then the alert is given up as `failed`. Nothing here touches a run: a receiver
//! that is down only ever delays its own alerts.

use std::time::Duration;

use futures::StreamExt as _;
use tracing::Instrument as _;

use super::deliver;
use super::Runner;
use jobdock_types::ChannelKind;
use secrecy::ExposeSecret as _;

use crate::store::alerts::outbox::{AttemptResult, Claimed, Next, OutboxRow, Target};
use crate::store::{now_ms, Dialect};

/// Delays before the 2nd, 3rd, … attempt, as multiples of the retry base (10 s by default:
/// 10 s, 30 s, 2 min, 10 min, 30 min, then every hour).
const BACKOFF: [u32; 6] = [1, 3, 12, 60, 180, 360];

/// Alerts claimed, and sent at once, per pass.
const BATCH: i64 = 16;

/// Settings of alert delivery.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Attempts per alert, the first included, before it is given up.
    pub max_attempts: u32,
    /// How long a receiver may take to answer.
    pub timeout: Duration,
    /// The first retry's delay; later ones are multiples of it.
    pub retry_base: Duration,
    /// The engine's address as its users reach it, for links to runs.
    pub public_url: Option<String>,
    /// How often the outbox is looked at when nothing wakes the loop.
    pub poll_interval: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(10),
            public_url: None,
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl AlertConfig {
    /// How long a claim lasts: long enough for a whole batch sent at once, so that no other
    /// replica takes an alert while it is being sent.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(20)
    }

    /// The delay after failed attempt number `attempt` (from 1).
    pub fn backoff(&self, attempt: i64) -> Duration {
        let i = usize::try_from(attempt - 1)
            .unwrap_or(0)
            .min(BACKOFF.len() - 1);
        self.retry_base * BACKOFF[i]
    }
}

impl Runner {
    /// Wakes the alert loop: something was put in the outbox.
    pub fn alerts_due(&self) {
        self.inner.alerts_due.notify_one();
    }

    pub(super) async fn alert_loop(&self) {
        let config = &self.inner.config.alerts;
        let client = || {
            reqwest::Client::builder()
                .timeout(config.timeout)
                // A redirect is an answer, not a place to post the alert again.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("jobdock/", env!("CARGO_PKG_VERSION")))
        };
        // Callbacks go where a caller said: through a resolver that refuses this network's
        // own addresses (see `egress`).
        let clients = client().build().and_then(|alerts| {
            let resolver = self.inner.ctx.callbacks.resolver();
            Ok(Clients {
                alerts,
                callbacks: client().dns_resolver(resolver).build()?,
            })
        });
        let http = match clients {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client; no alerts are sent");
                return;
            }
        };
        let store = &self.inner.ctx.store;
        // On SQLite there is one engine: claims left by its previous life are free at once.
        if store.dialect() == Dialect::Sqlite {
            if let Err(e) = store.release_alert_claims().await {
                tracing::warn!(error = %e, "could not release earlier alert claims");
            }
        }
        loop {
            let lease_until = now_ms() + config.lease().as_millis() as i64;
            let full = match store
                .claim_alerts(&self.inner.owner, lease_until, BATCH)
                .await
            {
                Ok(claimed) => {
                    let n = claimed.len();
                    futures::stream::iter(claimed)
                        .for_each_concurrent(None, |c| {
                            let channel = match &c.target {
                                Target::Channel { name, .. } => name.as_str(),
                                Target::Callback => "-",
                            };
                            let span = tracing::info_span!("alert", alert_id = %c.alert.id,
                                channel, event = %c.alert.event,
                                job = c.alert.job_name.as_deref().unwrap_or("-"),
                                run_id = c.alert.run_id.as_deref().unwrap_or("-"));
                            self.deliver(&http, c).instrument(span)
                        })
                        .await;
                    n as i64 == BATCH
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim alerts; retrying");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = self.inner.alerts_due.notified() => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
            }
        }
    }

    /// One attempt at one claimed alert, recorded with what becomes of the alert.
    async fn deliver(&self, http: &Clients, c: Claimed) {
        let config = &self.inner.config.alerts;
        let result = match &c.target {
            Target::Channel { kind, .. } => self.send_alert(&http.alerts, &c.alert, *kind).await,
            Target::Callback => self.send_callback(&http.callbacks, &c.alert).await,
        };
        let attempt = c.alert.attempts + 1;
        let next = if result.error.is_none() {
            Next::Delivered
        } else if attempt >= i64::from(config.max_attempts) || refused_for_good(&c, &result) {
            Next::Failed
        } else {
            Next::RetryAt(now_ms() + config.backoff(attempt).as_millis() as i64)
        };
        match next {
            Next::Delivered => tracing::info!(attempt, "alert delivered"),
            Next::RetryAt(_) => {
                tracing::warn!(
                    attempt,
                    error = result.error.as_deref().unwrap_or(""),
                    "alert not delivered; will retry"
                )
            }
            Next::Failed => {
                tracing::error!(
                    attempt,
                    error = result.error.as_deref().unwrap_or(""),
                    "alert not delivered; giving up"
                )
            }
        }
        let store = &self.inner.ctx.store;
        match store
            .record_alert_attempt(&c.alert.id, &self.inner.owner, &result, next)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the alert's lease ran out while it was sent; another replica has it"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not record the attempt; the alert is tried again after its lease")
            }
        }
    }
}

/// The HTTP clients of the outbox.
struct Clients {
    alerts: reqwest::Client,
    callbacks: reqwest::Client,
}

/// A callback's receiver that answers 4xx (but 408 and 429) refuses it for good: Data
/// Factory answers so for an activity that has ended or a URI that is not its own.
fn refused_for_good(c: &Claimed, result: &AttemptResult) -> bool {
    c.target == Target::Callback
        && result
            .http_status
            .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
}

impl Runner {
    async fn send_alert(
        &self,
        http: &reqwest::Client,
        alert: &OutboxRow,
        kind: ChannelKind,
    ) -> AttemptResult {
        let config = &self.inner.config.alerts;
        let channel_id = alert.channel_id.as_deref().unwrap_or_default();
        match crate::service::channels::open(&self.inner.ctx, channel_id).await {
            Ok(opened) => {
                let out = deliver::request(
                    alert,
                    kind,
                    opened.signing_secret.as_ref(),
                    config.public_url.as_deref(),
                    now_ms() / 1000,
                );
                deliver::send(http, &opened.url, out, config.timeout).await
            }
            Err(e) => not_sent(format!("cannot open the channel's sealed values: {e}")),
        }
    }

    async fn send_callback(&self, http: &reqwest::Client, alert: &OutboxRow) -> AttemptResult {
        let ctx = &self.inner.ctx;
        let id = alert.callback_id.as_deref().unwrap_or_default();
        let out = match crate::service::callbacks::outgoing(ctx, id).await {
            Ok(out) => out,
            Err(e) => return not_sent(format!("cannot build the callback: {e}")),
        };
        let allowed = reqwest::Url::parse(out.uri.expose_secret())
            .is_ok_and(|url| ctx.callbacks.may_call(&url));
        if !allowed {
            return not_sent("the callback's address is no longer allowed".into());
        }
        let request = deliver::Outgoing {
            body: out.body,
            headers: vec![("x-jobdock-delivery", alert.id.clone())],
        };
        deliver::send(http, &out.uri, request, self.inner.config.alerts.timeout).await
    }
}

fn not_sent(error: String) -> AttemptResult {
    AttemptResult {
        at: now_ms(),
        http_status: None,
        error: Some(error),
        duration_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_hourly() {
        let c = AlertConfig::default();
        let secs: Vec<u64> = (1..=8).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(secs, [10, 30, 120, 600, 1800, 3600, 3600, 3600]);
        let fast = AlertConfig {
            retry_base: Duration::from_millis(100),
            ..Default::default()
        };
        assert_eq!(fast.backoff(2), Duration::from_millis(300));
    }
}
