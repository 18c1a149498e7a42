-- The dispatcher reads the queue by job: the first due run of each job, then, while it
-- claims, a job's next one. The queued runs of a job, in queue order, are one range here.
CREATE INDEX runs_queued_job ON runs (job_id, seq) WHERE status = 'queued';
