-- Runs, their attempts and their logs.
-- `seq` orders runs (first in, first out); `id` is what the API shows.

CREATE TABLE runs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    job_id           TEXT NOT NULL REFERENCES jobs (id),
    job_name         TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempt          BIGINT NOT NULL DEFAULT 1,
    max_attempts     BIGINT NOT NULL DEFAULT 1,
    spec             TEXT NOT NULL,
    backend          TEXT NOT NULL,
    trigger_kind     TEXT NOT NULL,
    triggered_by     TEXT,
    idempotency_key  TEXT,
    request_hash     TEXT,
    backend_ref      TEXT,
    exit_code        BIGINT,
    oom_killed       BIGINT NOT NULL DEFAULT 0,
    reason           TEXT,
    created_at       BIGINT NOT NULL,
    first_started_at BIGINT,
    started_at       BIGINT,
    finished_at      BIGINT,
    next_attempt_at  BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    log_lines        BIGINT NOT NULL DEFAULT 0,
    log_bytes        BIGINT NOT NULL DEFAULT 0,
    log_dropped      BIGINT NOT NULL DEFAULT 0,
    -- Where the stored log stands, per stream: the last timestamp (ns) stored and how many
    -- stored lines carry it. Docker can deliver one stream well ahead of the other, so one
    -- position for both would lose the lagging stream's lines on a resume.
    last_out_ts      BIGINT,
    last_out_n       BIGINT NOT NULL DEFAULT 0,
    last_err_ts      BIGINT,
    last_err_n       BIGINT NOT NULL DEFAULT 0
);
-- Two triggers with one key create one run: the database decides, not a check-then-insert.
CREATE UNIQUE INDEX runs_idempotency_key ON runs (job_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status_seq ON runs (status, seq);
CREATE INDEX runs_job_seq ON runs (job_name, seq);

CREATE TABLE run_attempts (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   BIGINT,
    oom_killed  BIGINT NOT NULL DEFAULT 0,
    reason      TEXT,
    started_at  BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (run_id, attempt)
);

-- One row per line; `ts` is the container's timestamp in nanoseconds.
CREATE TABLE run_logs (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    line_no BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    ts      BIGINT NOT NULL,
    stream  TEXT NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (run_id, line_no)
);
-- The whole log is read in time order (stdout and stderr interleaved as written).
CREATE INDEX run_logs_time ON run_logs (run_id, ts, line_no);
