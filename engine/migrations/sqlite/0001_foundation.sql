-- Engine foundation: settings, jobs, sealed secrets, API tokens, audit log.
-- Times are Unix milliseconds (BIGINT) so that both databases share one set of queries.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE jobs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    backend    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
-- A name is unique among live jobs; a deleted job keeps its row (its runs stay readable).
CREATE UNIQUE INDEX jobs_name_live_key ON jobs (name) WHERE deleted_at IS NULL;

CREATE TABLE job_secrets (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE INDEX job_secrets_key_id ON job_secrets (key_id);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    jobs         TEXT,
    token_hash   BLOB NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX api_tokens_hash_key ON api_tokens (token_hash);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         BIGINT NOT NULL,
    token_id   TEXT,
    token_name TEXT,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    request_id TEXT
);
