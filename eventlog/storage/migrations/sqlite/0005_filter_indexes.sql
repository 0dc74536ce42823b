-- One index per feed filter, so that a filter walks only the events it matches (one that
-- matches nothing is a single probe). seq is the rowid, which every SQLite index already ends
-- with: an index on (event_type) is in (event_type, seq) order, as the feed reads it.
-- worker_id is often NULL, and a filter on it never asks for NULL: the index leaves those out.
CREATE INDEX events_event_type ON events (event_type);
CREATE INDEX events_step ON events (step);
CREATE INDEX events_status ON events (status);
CREATE INDEX events_worker_id ON events (worker_id) WHERE worker_id IS NOT NULL;
