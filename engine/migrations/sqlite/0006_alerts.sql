-- Alerts: notification channels with their sealed URL and signing secret, and the outbox of
-- alerts waiting to be delivered, with every delivery attempt.

CREATE TABLE alert_channels (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    -- The URL's scheme and host, for people; the whole URL is sealed below (a Slack webhook
    -- URL is a credential).
    url_shown      TEXT NOT NULL,
    description    TEXT,
    -- A channel-wide subscription: a job-name pattern and a JSON list of events.
    subscribe_jobs TEXT,
    subscribe_on   TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX alert_channels_name_key ON alert_channels (name);

-- Sealed like job secrets: `url` and, for webhooks, `signing_secret`.
CREATE TABLE alert_channel_secrets (
    channel_id TEXT NOT NULL REFERENCES alert_channels (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, key)
);
CREATE INDEX alert_channel_secrets_key_id ON alert_channel_secrets (key_id);

-- One row per alert and channel, kept until it is delivered or given up (`status`), so that
-- no alert is lost across a restart. A replica sends a row only under its lease
-- (`claimed_by` until `claimed_until`), so that with several replicas each alert is sent once.
CREATE TABLE alert_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    channel_id      TEXT NOT NULL REFERENCES alert_channels (id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    job_name        TEXT,
    run_id          TEXT,
    occurred_at     BIGINT NOT NULL,
    summary         TEXT NOT NULL,
    details         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    delivered_at    BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX alert_outbox_channel ON alert_outbox (channel_id, seq);

CREATE TABLE alert_attempts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id   TEXT NOT NULL REFERENCES alert_outbox (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    http_status BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX alert_attempts_outbox ON alert_attempts (outbox_id, seq);
