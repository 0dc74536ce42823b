-- The purge horizon: every event at or below purged_seq has been removed (retention, or
-- `eventlog purge`). Kept apart from the events so it holds when the log is empty: the next seq
-- is never below it, and a reader resuming below it is told that events are gone.
CREATE TABLE eventlog_head (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    purged_seq INTEGER NOT NULL
);
INSERT INTO eventlog_head (id, purged_seq) VALUES (1, 0);
