-- Where each stream of a run's log is stored up to, for backends whose lines carry no
-- timestamps of their own (Nomad): the backend's opaque cursor after the last stored line,
-- and the attempt it belongs to (a new attempt's log starts afresh).
ALTER TABLE runs ADD COLUMN log_out_cursor TEXT;
ALTER TABLE runs ADD COLUMN log_err_cursor TEXT;
ALTER TABLE runs ADD COLUMN log_cursor_attempt BIGINT;
