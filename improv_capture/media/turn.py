"""Time-limited TURN credentials in coturn's shared-secret scheme (its "TURN REST API").

The server never talks to the TURN server: it shares a secret with it (coturn's
``use-auth-secret`` and ``static-auth-secret``) and hands each performer, in its ``welcome``,
a user name that carries its own expiry and a password that is the secret's HMAC of it. coturn
recomputes the HMAC and refuses a user name whose expiry has passed, so a credential that
leaks is worth nothing after its expiry and no per-user state exists anywhere.

The server's own peer connections never use TURN (they are the far end of every relayed
path): these credentials only go to clients, next to ``settings.ice_servers``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from improv_capture.media.turn_urls import (
    MIN_SECRET_CHARS,
    check_turn_url,
    turn_transport,
)
from improv_capture.settings import Settings

__all__ = ["MIN_SECRET_CHARS", "check_turn_url", "ice_servers_for", "turn_credential", "turn_transport"]

def turn_credential(secret: str, user: str, expires_at: int) -> tuple[str, str]:
    """The user name ``<expires_at>:<user>`` and its password, base64(HMAC-SHA1(secret,
    user name)), as coturn computes it."""
    username = f"{int(expires_at)}:{user}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers_for(
    settings: Settings, user: str, now: float | None = None
) -> list[dict[str, Any]]:
    """A client's ICE servers: ``settings.ice_servers``, and with TURN configured one more
    entry with every TURN URL and a credential of ``user`` valid for ``settings.turn_ttl_s``
    from ``now``. A new credential on every call (every welcome): a performer who reconnects
    gets a fresh one, so a session longer than the TTL still relays after a reconnect."""
    servers = list(settings.ice_servers)
    secret = settings.turn_secret.get_secret_value() if settings.turn_secret else None
    if settings.turn_urls and secret:
        expires_at = int(time.time() if now is None else now) + settings.turn_ttl_s
        username, credential = turn_credential(secret, user, expires_at)
        servers.append({"urls": list(settings.turn_urls), "username": username,
                        "credential": credential})
    return servers
