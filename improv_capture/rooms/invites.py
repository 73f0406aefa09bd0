"""Operator token and signed invite tokens.

An invite is ``base64url(claims).base64url(hmac_sha256(claims))``: the server keeps no invite
table, so an invite works after a restart, expires by itself, and cannot be forged or edited
to point at another room or seat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

INVITE_VERSION = 1


class InviteError(Exception):
    """An invite that is not valid; ``expired`` tells an old one from a forged one."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class Invite:
    room_id: str
    performer_id: str
    display_name: str
    expires_at: float


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InviteSigner:
    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(("improv-invite:" + key).encode()).digest()

    def _mac(self, body: str) -> str:
        return _b64encode(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def sign(self, invite: Invite) -> str:
        claims = {
            "v": INVITE_VERSION,
            "r": invite.room_id,
            "p": invite.performer_id,
            "n": invite.display_name,
            "e": int(invite.expires_at),
            "j": secrets.token_urlsafe(6),
        }
        body = _b64encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{body}.{self._mac(body)}"

    def verify(self, token: object, now: float | None = None) -> Invite:
        if (not isinstance(token, str) or not token.isascii() or token.count(".") != 1
                or len(token) > 4096):
            raise InviteError("malformed invite")
        body, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InviteError("invalid invite signature")
        try:
            claims = json.loads(_b64decode(body))
            invite = Invite(
                room_id=str(claims["r"]),
                performer_id=str(claims["p"]),
                display_name=str(claims["n"]),
                expires_at=float(claims["e"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InviteError("malformed invite") from exc
        if claims.get("v") != INVITE_VERSION:
            raise InviteError("unsupported invite version")
        if invite.expires_at <= (time.time() if now is None else now):
            raise InviteError("invite expired", expired=True)
        return invite


def tokens_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
