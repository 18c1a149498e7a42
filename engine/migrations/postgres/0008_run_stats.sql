-- Per-job statistics of finished runs: a compact row per run, written in the same
-- transaction as the run's final status. It has no foreign key to `runs` on purpose: the
-- retention task prunes runs and their logs, and these rows outlive them (the task keeps
-- the newest 1000 per job), so that durations and start latencies keep their baselines.
CREATE TABLE run_stats (
    run_id           TEXT PRIMARY KEY,
    job_name         TEXT NOT NULL,
    finished_at      BIGINT NOT NULL,
    status           TEXT NOT NULL,
    -- The last attempt's container start to its end; NULL when it never started.
    duration_ms      BIGINT,
    -- Trigger to the first attempt's start; NULL when it never started.
    start_latency_ms BIGINT
);
CREATE INDEX run_stats_job_finished ON run_stats (job_name, finished_at);

-- Retention looks for old final runs by the time they finished.
CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL;
