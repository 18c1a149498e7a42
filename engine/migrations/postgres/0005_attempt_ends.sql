-- How an attempt ended, kept on the attempt before the backend's objects are removed and
-- the run is moved to its final status: an engine that stops in between finds the end here
-- instead of taking the run for lost.
ALTER TABLE run_attempts ADD COLUMN ended_as TEXT;
