-- An execution's events stored together. The table is in seq order, and executions run
-- interleaved (hundreds at once), so an execution's page read each of its events from a page of
-- the file of its own: one read of the disk per event once the log outgrows memory (measured at
-- 10 million events: an execution's page 1.6 -> 3.1 ms, with an execution and a type 0.5 ->
-- 1.1 ms). This index holds every column in (execution_id, seq) order: an execution's events
-- are a few neighbouring pages of it, and reading them never visits the table. It replaces the
-- (execution_id, seq) index it begins with. Its cost, measured: the file about 1.8 times as
-- large and each event written twice (README, "An execution's events together"). Every column
-- must be in it: a test compares it with the table's, so a column added later must be added
-- here too.
CREATE INDEX events_execution ON events (
    execution_id, seq, event_id, step, event_type, status, payload, meta, worker_id,
    result_kind, result_uri, event_ids, actionable, informative, created_at, ingested_at,
    defaulted
);
DROP INDEX events_execution_seq;
