-- A run's lock rows are kept while it waits for or holds its locks, and removed once it has
-- ended and freed its slots: lock checks read the rows of one key, and with every run ever
-- made kept there, each trigger and claim of a job with a lock read its whole history.
DELETE FROM run_locks WHERE run_id IN (
    SELECT id FROM runs WHERE holds_slot = 0 AND status NOT IN ('queued', 'starting', 'running')
);
