-- The log. seq is the commit-ordered position: the writer assigns MAX(seq)+1… while it holds
-- SQLite's write lock (BEGIN IMMEDIATE), so seq order is commit order, across processes too.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    execution_id INTEGER NOT NULL,
    event_id     INTEGER NOT NULL,
    step         TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    payload      TEXT    NOT NULL,   -- JSON text as normalised from the request
    meta         TEXT,               -- JSON text
    worker_id    TEXT,
    result_kind  TEXT    NOT NULL,
    result_uri   TEXT,
    event_ids    TEXT,               -- JSON array of integers
    actionable   INTEGER NOT NULL,
    informative  INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,   -- microseconds since the Unix epoch, UTC
    ingested_at  INTEGER NOT NULL,   -- microseconds since the Unix epoch, UTC
    defaulted    INTEGER NOT NULL,   -- bit set of the fields the server filled in
    UNIQUE (execution_id, event_id)
);

CREATE INDEX events_event_id ON events (event_id);
CREATE INDEX events_execution_seq ON events (execution_id, seq);
