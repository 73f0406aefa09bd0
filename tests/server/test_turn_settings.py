"""The TURN settings a server starts with, and the credentials it hands out: clear errors for
what cannot work, and a secret that no error or repr prints. coturn accepting the credentials
(and refusing expired ones) is tests/network/test_turn.py's."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from pydantic import ValidationError

from improv_capture.media.turn import ice_servers_for, turn_transport
from improv_capture.settings import Settings

pytestmark = pytest.mark.unit

SECRET = "s3cret-s3cret-s3cret"
URLS = ["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp",
        "turns:turn.example.org:5349?transport=tcp"]


@pytest.mark.parametrize(("urls", "secret", "error"), [
    (["stun:turn.example.org:3478"], SECRET, "is not a TURN URL"),
    (["https://turn.example.org"], SECRET, "is not a TURN URL"),
    (["turn:turn.example.org:3478?transport=sctp"], SECRET, "is not a TURN URL"),
    (["turns:turn.example.org:5349?transport=udp"], SECRET, "runs over TCP only"),
    (["turn:turn.example.org:70000"], SECRET, "no valid port"),
    (URLS, None, "IMPROV_TURN_URLS needs IMPROV_TURN_SECRET"),
    ([], SECRET, "IMPROV_TURN_URLS is empty"),
    (URLS, "too-short", "use 16 at least"),
])
def test_turn_settings_that_cannot_work_stop_the_start_saying_why(
    urls: list[str], secret: str | None, error: str
) -> None:
    with pytest.raises(ValidationError, match=error) as caught:
        Settings(turn_urls=urls, turn_secret=secret, operator_token="op-token-never-shown")
    assert "op-token-never-shown" not in str(caught.value)
    assert secret is None or secret not in str(caught.value)


def test_each_call_makes_a_credential_of_its_user_in_coturns_scheme() -> None:
    settings = Settings(ice_servers=[{"urls": "stun:stun.example.org"}], turn_urls=URLS,
                        turn_secret=SECRET, turn_ttl_s=600)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    stun, turn = ice_servers_for(settings, "p_ann", now=1_800_000_000)
    assert stun == {"urls": "stun:stun.example.org"}
    assert turn["urls"] == URLS and turn["username"] == "1800000600:p_ann"
    mac = hmac.new(SECRET.encode(), b"1800000600:p_ann", hashlib.sha1).digest()
    assert turn["credential"] == base64.b64encode(mac).decode()
    # the operator's is its own, and without TURN settings nothing is added
    assert ice_servers_for(settings, "operator", now=1_800_000_000)[1]["username"] == (
        "1800000600:operator")
    assert ice_servers_for(Settings(), "p_ann") == []
    assert [turn_transport(u) for u in URLS] == ["udp", "tcp", "tls"]
    assert turn_transport("turn:[2001:db8::1]:3478") == "udp"
