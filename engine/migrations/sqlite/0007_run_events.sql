-- A run's timeline: queued, waiting (and for what), claimed, launched, started, first
-- output, progress, anomalies, retries, finished. Written in the transaction of the change
-- it records.
CREATE TABLE run_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX run_events_run ON run_events (run_id, id);

-- What a queued run last waited for (so that a change of reason is recorded once), and
-- when its output last moved (a stalled run has none for a long time).
ALTER TABLE runs ADD COLUMN waiting_for TEXT;
ALTER TABLE runs ADD COLUMN last_output_at BIGINT;
