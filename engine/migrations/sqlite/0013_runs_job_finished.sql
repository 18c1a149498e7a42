-- A run's end looks up its job's previous finished run (for `recovery` alerts): by job and
-- end time, not by scanning every finished run of every job.
CREATE INDEX runs_job_finished ON runs (job_id, finished_at) WHERE finished_at IS NOT NULL;
