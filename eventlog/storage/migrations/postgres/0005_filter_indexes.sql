-- One index per feed filter, in the feed's order, so that a filter walks only the events it
-- matches (one that matches nothing is a single probe). With several filters the planner picks
-- the most selective index from its statistics, or combines them (BitmapAnd).
-- worker_id is often NULL, and a filter on it never asks for NULL: the index leaves those out.
CREATE INDEX events_event_type_seq ON events (event_type, seq);
CREATE INDEX events_step_seq ON events (step, seq);
CREATE INDEX events_status_seq ON events (status, seq);
CREATE INDEX events_worker_id_seq ON events (worker_id, seq) WHERE worker_id IS NOT NULL;
