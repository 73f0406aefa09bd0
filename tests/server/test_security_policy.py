"""The pages' Content-Security-Policy on one of several nodes: the other live nodes' socket
origins, and nothing a public URL could smuggle in (api/http_guard.py)."""

from __future__ import annotations

import pytest

from improv_capture.api.http_guard import (
    SecurityHeaders,
    content_security_policy,
    socket_origin,
)

pytestmark = pytest.mark.unit


def test_a_node_public_url_gives_its_socket_origin_or_nothing() -> None:
    assert socket_origin("https://node-b.example.com") == "wss://node-b.example.com"
    assert socket_origin("http://198.18.0.7:8000/") == "ws://198.18.0.7:8000"
    assert socket_origin("https://[2001:db8::7]:8443/base") == "wss://[2001:db8::7]:8443"
    for hostile in ("https://a.example; script-src *", "http://a b.example", "javascript:alert(1)",
                    "https://a.example\r\nx-injected: 1", "ftp://a.example", "https://", "node-b"):
        assert socket_origin(hostile) is None, hostile


def test_the_policy_follows_the_live_nodes() -> None:
    live: list[str] = []
    headers = SecurityHeaders(app=None, other_nodes=lambda: live)  # type: ignore[arg-type]
    assert headers.policy() == content_security_policy().encode()
    live[:] = ["https://c.example", "https://b.example", "https://b.example; script-src *"]
    directives = headers.policy().decode().split("; ")
    assert "connect-src 'self' wss://b.example wss://c.example" in directives
    assert [d for d in directives if d.startswith("script-src")] == ["script-src 'self'"]
    live.clear()
    assert headers.policy() == content_security_policy().encode()
