-- The state a job keeps between runs (a Singer bookmark, a high-water mark): every version,
-- the newest is current. Keyed by the job's name, not its id, so that a job deleted and
-- created again under the same name resumes from its bookmark instead of reloading all.
CREATE TABLE job_states (
    job_name   TEXT NOT NULL,
    version    BIGINT NOT NULL,
    state      TEXT NOT NULL,
    run_id     TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (job_name, version)
);

-- What a run has set and not committed: it becomes its job's state when the run succeeds
-- (or the script commits it), and goes with the run otherwise.
CREATE TABLE run_held_states (
    run_id     TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);


-- The latest progress a run's script reported (`::jobdock::progress <done>/<total> <text>`),
-- and when, shown on the run itself.
ALTER TABLE runs ADD COLUMN progress TEXT;
ALTER TABLE runs ADD COLUMN progress_at BIGINT;
