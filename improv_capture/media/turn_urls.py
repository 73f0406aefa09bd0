"""TURN URIs (RFC 7065) a browser and the bot can use, and what a TURN secret needs: the rules
IMPROV_TURN_URLS and IMPROV_TURN_SECRET are checked by at start-up (settings.py), apart from
the credentials (media/turn.py), which need the settings themselves."""

from __future__ import annotations

import re

#: What coturn needs of the secret in practice; shorter is refused at start-up.
MIN_SECRET_CHARS = 16

#: turn:/turns: URIs (RFC 7065) of the transports WebRTC clients use: TURN over UDP or TCP,
#: and over TLS (turns:, TCP only; aiortc and browsers have no DTLS transport to TURN).
_TURN_URL = re.compile(
    r"(?P<scheme>turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s?:/@\[\]]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)


def check_turn_url(url: str) -> str:
    """``url`` when it is a TURN URI a browser and the bot can use; ValueError saying what is
    wrong otherwise (a STUN URI belongs in IMPROV_ICE_SERVERS)."""
    found = _TURN_URL.fullmatch(url) if isinstance(url, str) else None
    if found is None:
        raise ValueError(
            f"IMPROV_TURN_URLS: {url!r} is not a TURN URL: expected turn:HOST[:PORT]"
            f"[?transport=udp|tcp] or turns:HOST[:PORT][?transport=tcp] (STUN servers go in "
            f"IMPROV_ICE_SERVERS)"
        )
    if found["port"] and not 0 < int(found["port"]) < 65536:
        raise ValueError(f"IMPROV_TURN_URLS: {url!r} has no valid port")
    if found["scheme"] == "turns" and found["transport"] == "udp":
        raise ValueError(f"IMPROV_TURN_URLS: {url!r}: turns: (TLS) runs over TCP only")
    return url


def turn_transport(url: str) -> str:
    """``udp``, ``tcp`` or ``tls``: how a client reaches the TURN server at ``url``."""
    found = _TURN_URL.fullmatch(url)
    if found is None:
        raise ValueError(f"not a TURN URL: {url!r}")
    if found["scheme"] == "turns":
        return "tls"
    return found["transport"] or "udp"
