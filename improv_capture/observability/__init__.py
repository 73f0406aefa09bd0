"""Watching a running server: Prometheus metrics (metrics.py), liveness and readiness probes
(health.py), and logs that carry the room, session and performer they are about (logs.py)."""
