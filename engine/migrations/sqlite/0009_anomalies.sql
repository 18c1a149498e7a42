-- Anomalies the engine noticed on runs. One of a kind per run: replicas evaluating the
-- same run at once raise it once.
CREATE TABLE anomalies (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    job_name      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    raised_at     BIGINT NOT NULL,
    message       TEXT NOT NULL,
    expected      DOUBLE PRECISION,
    observed      DOUBLE PRECISION,
    closed_at     BIGINT,
    closed_reason TEXT
);
CREATE UNIQUE INDEX anomalies_run_kind ON anomalies (run_id, kind);
CREATE INDEX anomalies_open ON anomalies (job_name, id) WHERE closed_at IS NULL;
