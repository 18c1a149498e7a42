-- Callbacks: where a caller asked to be told of a run's end (Data Factory's Webhook activity
-- sends a `callBackUri`). The URI often carries a credential, so it is sealed like a secret;
-- `uri_digest` (its SHA-256) lets a replayed trigger add each target once.
CREATE TABLE run_callbacks (
    id         TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    uri_digest TEXT NOT NULL,
    -- The URI's scheme and host, for people.
    uri_shown  TEXT NOT NULL,
    -- The engine's address as the caller reached it, for the links in the callback.
    base_url   TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX run_callbacks_target ON run_callbacks (run_id, uri_digest);
CREATE INDEX run_callbacks_key_id ON run_callbacks (key_id);

-- The outbox now also carries callbacks: a row belongs to a channel or to a callback.
-- SQLite cannot drop a NOT NULL, so both outbox tables are rebuilt; the attempts are copied
-- and dropped first, so that dropping the old outbox cascades to nothing. Renaming the new
-- outbox rewrites the attempts' reference to it.
CREATE TABLE alert_outbox_new (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    channel_id      TEXT REFERENCES alert_channels (id) ON DELETE CASCADE,
    callback_id     TEXT REFERENCES run_callbacks (id) ON DELETE CASCADE,
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
    created_at      BIGINT NOT NULL,
    CHECK ((channel_id IS NULL) <> (callback_id IS NULL))
);
INSERT INTO alert_outbox_new (seq, id, channel_id, event, job_name, run_id, occurred_at, summary,
    details, status, attempts, next_attempt_at, claimed_by, claimed_until, delivered_at, created_at)
SELECT seq, id, channel_id, event, job_name, run_id, occurred_at, summary, details, status,
    attempts, next_attempt_at, claimed_by, claimed_until, delivered_at, created_at
FROM alert_outbox;

CREATE TABLE alert_attempts_new (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id   TEXT NOT NULL REFERENCES alert_outbox_new (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    http_status BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL
);
INSERT INTO alert_attempts_new (seq, outbox_id, attempt, at, http_status, error, duration_ms)
SELECT seq, outbox_id, attempt, at, http_status, error, duration_ms FROM alert_attempts;

DROP TABLE alert_attempts;
DROP TABLE alert_outbox;
ALTER TABLE alert_outbox_new RENAME TO alert_outbox;
ALTER TABLE alert_attempts_new RENAME TO alert_attempts;
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX alert_outbox_channel ON alert_outbox (channel_id, seq);
CREATE INDEX alert_outbox_callback ON alert_outbox (callback_id);
CREATE INDEX alert_attempts_outbox ON alert_attempts (outbox_id, seq);
