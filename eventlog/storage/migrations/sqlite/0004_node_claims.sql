-- Claims on snowflake node ids: a running instance holds one row (its node id) under a lease,
-- renews it while it runs and releases it at shutdown, so no two live instances mint ids under
-- the same node id. Claims are taken with the write lock held (BEGIN IMMEDIATE), so processes
-- sharing the file take turns. A released row stays, holder columns NULL, to keep ceiling_ms.
CREATE TABLE node_claims (
    node_id    INTEGER PRIMARY KEY CHECK (node_id BETWEEN 0 AND 1023),
    host       TEXT,               -- the holder: host name, process id, random token
    pid        INTEGER,
    token      TEXT,
    claimed_at INTEGER,            -- microseconds since the Unix epoch, UTC
    renewed_at INTEGER,
    expires_at INTEGER,            -- the claim is free to take from this moment on
    ceiling_ms INTEGER NOT NULL    -- Unix ms: no id minted under this node id, nor any the
                                   -- holder may mint before expires_at, has a later timestamp
);
