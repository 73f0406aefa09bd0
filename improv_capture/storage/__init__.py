"""Where sessions are kept besides the data dir: S3-compatible object storage (server side)."""
