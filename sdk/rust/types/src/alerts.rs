//! Alerts: notification channels (a signed webhook or a Slack incoming webhook), the events
//! jobs subscribe them to, and the record of every delivery.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened to a job that a channel may be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A run ended `failed` or `lost`.
    Failure,
    /// A run ended `timed_out`.
    Timeout,
    /// A run behaved unlike the job's past runs.
    Anomaly,
    /// A run succeeded and the job's previous finished run had not (cancelled and skipped
    /// runs do not count).
    Recovery,
    /// A run succeeded.
    Success,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 5] = [
        Self::Failure,
        Self::Timeout,
        Self::Anomaly,
        Self::Recovery,
        Self::Success,
    ];

    /// The kind as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failure => "failure",
            Self::Timeout => "timeout",
            Self::Anomaly => "anomaly",
            Self::Recovery => "recovery",
            Self::Success => "success",
        }
    }
}

impl std::str::FromStr for AlertKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown alert event `{s}`"))
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's subscription of one channel, in the job's `alerts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlertSubscription {
    /// The channel's name.
    pub channel: String,
    /// The events the channel is told about.
    pub on: Vec<AlertKind>,
}

/// What a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A JSON `POST` signed with `X-Jobdock-Signature`.
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": …}`).
    Slack,
}

impl ChannelKind {
    /// The kind as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
        }
    }
}

impl std::str::FromStr for ChannelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "webhook" => Ok(Self::Webhook),
            "slack" => Ok(Self::Slack),
            other => Err(format!("unknown channel kind `{other}`")),
        }
    }
}

/// A channel-wide subscription: every job whose name matches `jobs`, so that one channel can
/// cover a whole team's jobs without each job naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChannelSubscription {
    /// A job-name pattern as in tokens (`*` matches any run of characters), e.g. `customer-a-*`
    /// or `*`.
    pub jobs: String,
    /// The events the channel is told about.
    pub on: Vec<AlertKind>,
}

/// Body of `POST /api/v1/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// Unique name: lowercase letters, digits and `-`, at most 63 characters.
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: ChannelKind,
    /// Where alerts are posted (`http://` or `https://`). Stored sealed; shown only as its
    /// scheme and host, since a Slack webhook URL is a credential.
    pub url: String,
    /// Webhooks only: the HMAC key of `X-Jobdock-Signature`. Generated when left out; shown
    /// only in the answer to this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// What the channel is for, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Also alert for every job matching a pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<ChannelSubscription>,
}

/// A channel as the API shows it: never its URL's path or its signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    /// Unique name.
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: ChannelKind,
    /// The URL's scheme and host only, e.g. `https://hooks.slack.com/…`.
    pub url: String,
    /// Whether requests carry `X-Jobdock-Signature` (webhooks).
    pub signed: bool,
    /// What the channel is for.
    pub description: Option<String>,
    /// The channel-wide subscription, if any.
    pub subscribe: Option<ChannelSubscription>,
    /// When the channel was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The answer to `POST /api/v1/channels`: the only time a webhook's signing secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedChannel {
    /// The channel.
    #[serde(flatten)]
    pub channel: Channel,
    /// Webhooks: the signing secret. Store it now: it cannot be shown again.
    pub signing_secret: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed; it is not tried again.
    Failed,
}

impl DeliveryStatus {
    /// The status as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown delivery status `{other}`")),
        }
    }
}

/// One attempt at delivering an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryAttempt {
    /// From 1.
    pub attempt: i64,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// Why it failed, when it did without an answer (or with a non-2xx one).
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

/// One alert for one channel, with every attempt at delivering it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// The alert's id, sent as `X-Jobdock-Delivery` (receivers dedupe on it).
    pub id: String,
    /// `failure`, `timeout`, `anomaly`, `recovery`, `success`, or `test`.
    pub event: String,
    /// The job.
    pub job: Option<String>,
    /// The run.
    pub run_id: Option<String>,
    /// In words.
    pub summary: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}
