"""Signed invites on their own (improv_capture/rooms/invites.py): what the signer hands out
comes back whole, and anything edited, expired, foreign or oversized is refused with a reason
the performer's page can show. Over the signaling socket: tests/server/test_bad_input.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from improv_capture.rooms.invites import Invite, InviteError, InviteSigner

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
INVITE = Invite("room_1a2b", "p_ann", "Ann Smith", NOW + 3600)


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def refusal(signer: InviteSigner, token: object, now: float = NOW) -> InviteError:
    with pytest.raises(InviteError) as refused:
        signer.verify(token, now=now)
    return refused.value


def test_an_invite_comes_back_as_it_was_signed() -> None:
    signer = InviteSigner("server key")
    token = signer.sign(INVITE)
    assert signer.verify(token, now=NOW) == INVITE
    assert InviteSigner("server key").verify(token, now=NOW) == INVITE  # after a restart
    assert signer.sign(INVITE) != token  # each invite is its own token
    names = Invite("room_x", "p_x", "Zoë «quoted» \"name\" 🎭", NOW + 60)
    assert signer.verify(signer.sign(names), now=NOW) == names
    assert signer.verify(token) == INVITE  # the clock's now, by default (NOW is years ahead)


def test_an_edited_body_or_mac_is_refused() -> None:
    signer = InviteSigner("server key")
    body, mac = signer.sign(INVITE).split(".")
    claims = json.loads(decode(body))
    for edit in ({"r": "room_other"}, {"p": "p_ben"}, {"e": claims["e"] + 86400}):
        edited = encode(json.dumps({**claims, **edit}, separators=(",", ":")).encode())
        assert str(refusal(signer, f"{edited}.{mac}")) == "invalid invite signature", edit
    flipped = mac[:-2] + ("AA" if not mac.endswith("AA") else "BB")
    for forged in (f"{body}.{flipped}", f"{body}.{mac[::-1]}", f"{body}.", f"{body}x.{mac}"):
        error = refusal(signer, forged)
        assert str(error) == "invalid invite signature" and not error.expired, forged


def test_another_servers_key_is_refused() -> None:
    token = InviteSigner("another server").sign(INVITE)
    assert str(refusal(InviteSigner("server key"), token)) == "invalid invite signature"


def test_an_expired_invite_is_flagged_expired() -> None:
    signer = InviteSigner("server key")
    token = signer.sign(INVITE)
    assert signer.verify(token, now=INVITE.expires_at - 1) == INVITE
    for now in (INVITE.expires_at, INVITE.expires_at + 1):
        error = refusal(signer, token, now=now)
        assert str(error) == "invite expired" and error.expired


@pytest.mark.parametrize("token", [None, 42, "", "no-dot", "a.b.c", "x" * 4097, "é.é", "body.mäc"])
def test_malformed_tokens_are_refused(token: object) -> None:
    error = refusal(InviteSigner("server key"), token)
    assert str(error) == "malformed invite" and not error.expired


def test_an_oversized_token_is_refused_before_its_mac_is_computed() -> None:
    signer = InviteSigner("server key")
    long_name = Invite("room_1a2b", "p_ann", "A" * 4000, NOW + 60)
    token = signer.sign(long_name)
    assert len(token) > 4096
    assert str(refusal(signer, token)) == "malformed invite"


def test_a_validly_signed_but_unsupported_invite_is_refused() -> None:
    """A token from a future version (or one missing claims) signed with the right key."""
    signer = InviteSigner("server key")
    key = hashlib.sha256(b"improv-invite:server key").digest()

    def signed(claims: dict[str, object]) -> str:
        body = encode(json.dumps(claims).encode())
        return f"{body}.{encode(hmac.new(key, body.encode(), hashlib.sha256).digest())}"

    claims = {"v": 1, "r": "room_1a2b", "p": "p_ann", "n": "Ann", "e": int(NOW + 60), "j": "x"}
    assert signer.verify(signed(claims), now=NOW) == Invite("room_1a2b", "p_ann", "Ann", NOW + 60)
    assert str(refusal(signer, signed({**claims, "v": 2}))) == "unsupported invite version"
    assert str(refusal(signer, signed({k: v for k, v in claims.items() if k != "v"}))) == (
        "unsupported invite version"
    )
    assert str(refusal(signer, signed({k: v for k, v in claims.items() if k != "r"}))) == (
        "malformed invite"
    )
    assert str(refusal(signer, signed({**claims, "e": "tomorrow"}))) == "malformed invite"
    not_json = encode(b"\xff\xfe not json")
    mac = encode(hmac.new(key, not_json.encode(), hashlib.sha256).digest())
    assert str(refusal(signer, f"{not_json}.{mac}")) == "malformed invite"
    assert time.time() < NOW  # NOW stays in the future for the default-clock check above
