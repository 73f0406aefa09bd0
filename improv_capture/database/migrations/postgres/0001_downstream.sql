-- The downstream index shared by every node: what database/sqlite.py keeps in the data dir
-- of one machine, column for column (times are ISO 8601 text, as there).
CREATE TABLE tokens (
    id TEXT PRIMARY KEY, role TEXT NOT NULL, label TEXT NOT NULL, token_sha256 TEXT UNIQUE NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, room_id TEXT, state TEXT,
    summary TEXT NOT NULL, manifest_mtime_ns BIGINT NOT NULL,
    s3_bucket TEXT, s3_key TEXT, s3_revision INTEGER, s3_stored_at TEXT, s3_error TEXT,
    local_removed INTEGER NOT NULL DEFAULT 0,
    revision INTEGER,
    -- the node whose data dir holds the session, and its public URL
    node_id TEXT, node_url TEXT
);
CREATE INDEX sessions_order ON sessions (started_at, session_id);
CREATE INDEX sessions_node ON sessions (node_id);
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY, type TEXT NOT NULL, data TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY, event_id BIGINT NOT NULL REFERENCES events (id), url TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt DOUBLE PRECISION NOT NULL,
    last_status INTEGER, last_error TEXT, created DOUBLE PRECISION NOT NULL, delivered_at TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt);
CREATE TABLE revocations (
    id BIGSERIAL PRIMARY KEY, performer_id TEXT NOT NULL, reason TEXT,
    revoked_at TEXT NOT NULL, sessions TEXT NOT NULL
);
