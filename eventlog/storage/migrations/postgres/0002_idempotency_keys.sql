-- Idempotency-Key records: a replayed request gets its first outcome back. The outcome is
-- written in the same transaction as the request's events.
CREATE TABLE idempotency_keys (
    key         text        PRIMARY KEY,
    fingerprint text        NOT NULL,  -- hash of the route and the request body
    outcome     json        NOT NULL,  -- request_id, event_ids, duplicates
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
