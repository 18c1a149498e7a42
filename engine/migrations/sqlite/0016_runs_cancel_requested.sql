-- Each replica looks every second for the cancels asked for of the runs it supervises; with
-- this index the look reads the runs with a cancel asked for, not every run going.
CREATE INDEX runs_cancel_requested ON runs (lease_owner) WHERE cancel_requested = 1;
