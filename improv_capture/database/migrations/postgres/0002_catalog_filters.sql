-- The catalog's filters, each in the listing's order: a page of a rare state or room reads
-- its own rows, not every session (scripts/bench_catalog.py --filters --postgres).
CREATE INDEX sessions_by_state ON sessions (state, started_at, session_id);
CREATE INDEX sessions_by_room ON sessions (room_id, started_at, session_id);
