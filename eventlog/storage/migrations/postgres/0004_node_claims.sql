-- Claims on snowflake node ids: a running instance holds one row (its node id) under a lease,
-- renews it while it runs and releases it at shutdown, so no two live instances mint ids under
-- the same node id. Claims are taken under a table lock, and leases are judged by this server's
-- clock alone. A released row stays, holder columns NULL, to keep ceiling_ms.
CREATE TABLE node_claims (
    node_id    integer PRIMARY KEY CHECK (node_id BETWEEN 0 AND 1023),
    host       text,               -- the holder: host name, process id, random token
    pid        integer,
    token      text,
    claimed_at timestamptz,
    renewed_at timestamptz,
    expires_at timestamptz,        -- the claim is free to take from this moment on
    ceiling_ms bigint NOT NULL     -- Unix ms: no id minted under this node id, nor any the
                                   -- holder may mint before expires_at, has a later timestamp
);
