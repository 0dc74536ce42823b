-- Idempotency-Key records: a replayed request gets its first outcome back. The outcome is
-- written in the same transaction as the request's events.
CREATE TABLE idempotency_keys (
    key         TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,   -- hash of the route and the request body
    outcome     TEXT    NOT NULL,   -- JSON: request_id, event_ids, duplicates
    created_at  INTEGER NOT NULL,   -- microseconds since the Unix epoch, UTC
    expires_at  INTEGER NOT NULL
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
