-- The purge horizon: every event at or below purged_seq has been removed (retention, or
-- `eventlog purge`). It moves in the purge's transactions, which lock this row as writers do.
ALTER TABLE eventlog_head ADD COLUMN purged_seq bigint NOT NULL DEFAULT 0;
