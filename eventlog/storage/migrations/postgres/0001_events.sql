-- The log. seq is the commit-ordered position: every write transaction first locks the one
-- row of eventlog_head and takes its seq values from it, so transactions that write events are
-- serialised and seq order is commit order, across every instance sharing the database.
CREATE TABLE eventlog_head (
    id       integer PRIMARY KEY CHECK (id = 1),
    last_seq bigint  NOT NULL
);
INSERT INTO eventlog_head (id, last_seq) VALUES (1, 0);

CREATE TABLE events (
    seq          bigint      PRIMARY KEY,
    execution_id bigint      NOT NULL,
    event_id     bigint      NOT NULL,
    step         text        NOT NULL,
    event_type   text        NOT NULL,
    status       text        NOT NULL,
    payload      json        NOT NULL,  -- json, not jsonb: kept exactly, \u0000 included
    meta         json,
    worker_id    text,
    result_kind  text        NOT NULL,
    result_uri   text,
    event_ids    json,                  -- array of integers
    actionable   boolean     NOT NULL,
    informative  boolean     NOT NULL,
    created_at   timestamptz NOT NULL,
    ingested_at  timestamptz NOT NULL,
    defaulted    smallint    NOT NULL,  -- bit set of the fields the server filled in
    UNIQUE (execution_id, event_id)
);

CREATE INDEX events_event_id ON events (event_id);
CREATE INDEX events_execution_seq ON events (execution_id, seq);
