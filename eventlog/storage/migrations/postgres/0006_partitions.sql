-- The log, range-partitioned by ingested_at: retention removes whole partitions (a detach and a
-- drop, no row-by-row delete) and the partitions' sizes follow time, not traffic. The service
-- creates partitions ahead (eventlog/storage/partitions.py); a write that finds none for its
-- instant creates it. There is no default partition: its rows would never expire.
--
-- A unique index on a partitioned table must hold the partition key, and a key that held
-- ingested_at would not stop a retry from being stored twice. Uniqueness of
-- (execution_id, event_id) rests on the log's write lock instead: every transaction that
-- appends events first locks the one row of eventlog_head, looks its keys up, and inserts only
-- those it did not find; events_key is the index those lookups read.
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_execution_id_event_id_key
    TO events_unpartitioned_key;
-- The old table is only read in seq order, by the copy (`eventlog migrate`), then dropped.
DROP INDEX events_event_id, events_execution_seq, events_event_type_seq, events_step_seq,
    events_status_seq, events_worker_id_seq;

CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (ingested_at);
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (seq, ingested_at);
CREATE INDEX events_key ON events (execution_id, event_id);
CREATE INDEX events_event_id ON events (event_id);
CREATE INDEX events_execution_seq ON events (execution_id, seq);
CREATE INDEX events_event_type_seq ON events (event_type, seq);
CREATE INDEX events_step_seq ON events (step, seq);
CREATE INDEX events_status_seq ON events (status, seq);
CREATE INDEX events_worker_id_seq ON events (worker_id, seq) WHERE worker_id IS NOT NULL;

-- A new database has nothing to copy.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM events_unpartitioned) THEN
        DROP TABLE events_unpartitioned;
    END IF;
END $$;
