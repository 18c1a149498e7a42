-- Parallelism: which runs hold a slot, the locks they need, lock capacities, schedules.

-- A run holds its slots (its job's, its locks', its backend's) from its claim until its
-- container is known to be gone; usually that is when it ends, but a run given up as lost
-- keeps them until the backend confirms.
ALTER TABLE runs ADD COLUMN holds_slot BIGINT NOT NULL DEFAULT 0;
UPDATE runs SET holds_slot = 1 WHERE status IN ('starting', 'running');
CREATE INDEX runs_holding ON runs (job_id) WHERE holds_slot = 1;

-- The locks a run needs, from its snapshot.
CREATE TABLE run_locks (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX run_locks_key ON run_locks (key);

-- A lock named by a job exists with capacity 1 until set here.
CREATE TABLE locks (
    key        TEXT PRIMARY KEY,
    capacity   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The last tick each job's schedule fired (or was passed over while paused).
CREATE TABLE schedule_ticks (
    job_id    TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    last_tick BIGINT NOT NULL
);
