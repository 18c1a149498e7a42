-- Whether a run's stored log is whole: 0 once a backend reported output it could not
-- deliver (a log driver that rotated it away, or cannot be read back, while the engine was
-- not attached to the container). The log itself marks the place.
ALTER TABLE runs ADD COLUMN log_complete BIGINT NOT NULL DEFAULT 1;
