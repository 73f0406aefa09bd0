"""A webhook receiver on loopback that checks each delivery's signature, as a downstream
service would, and can fail its first attempts to make the server retry."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers import free_port

SECRET = "test-webhook-secret"


class Receiver:
    """A webhook receiver that fails its first ``failures`` requests, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[dict[str, Any]] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Improv-Timestamp"]
                expected = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + body,
                                                hashlib.sha256).hexdigest()
                valid = hmac.compare_digest(expected, self.headers["X-Improv-Signature"])
                event_id = self.headers["X-Improv-Event-Id"]
                receiver.attempts.append({"event_id": event_id, "valid": valid})
                if not valid:
                    self.send_response(401)
                elif sum(1 for a in receiver.attempts if a["event_id"] == event_id) <= receiver.failures:
                    self.send_response(500)
                else:
                    receiver.accepted.setdefault(event_id, json.loads(body))  # deduplicate
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
