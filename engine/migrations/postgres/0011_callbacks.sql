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
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX run_callbacks_target ON run_callbacks (run_id, uri_digest);
CREATE INDEX run_callbacks_key_id ON run_callbacks (key_id);

-- The outbox now also carries callbacks: a row belongs to a channel or to a callback.
ALTER TABLE alert_outbox ALTER COLUMN channel_id DROP NOT NULL;
ALTER TABLE alert_outbox ADD COLUMN callback_id TEXT REFERENCES run_callbacks (id) ON DELETE CASCADE;
ALTER TABLE alert_outbox ADD CONSTRAINT alert_outbox_one_target
    CHECK ((channel_id IS NULL) <> (callback_id IS NULL));
CREATE INDEX alert_outbox_callback ON alert_outbox (callback_id);
