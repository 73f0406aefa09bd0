"""1000 random and mutated signaling messages: no crash, no 5xx, and afterwards the server
still relays and records."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    publishing,
    start_recording,
    stop_recording,
    verify,
    wait_for,
)

pytestmark = [pytest.mark.process, PREENCODED_BOTS]


TYPES = ["hello", "consent", "capture", "publish", "subscribe_answer", "leave", "ping", "dance", ""]
SEED_SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    "a=rtpmap:96 VP8/90000\r\na=rtcp-mux\r\n"
)

#: what docs/signaling.md says the server sends, and the codes of its `error` messages
SERVER_TYPES = {"welcome", "consent_ok", "publish_answer", "subscribe_offer", "peers",
                "recording", "prompt", "pong", "error"}
ERROR_CODES = {"unknown_type", "bad_sdp", "consent_required", "bad_consent", "bad_message",
               "wrong_state", "rate_limited"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_sdp(draw: st.DrawFn) -> str:
    lines = SEED_SDP.split("\r\n")
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "garble", "cut"]))
        if action == "drop":
            lines.pop(i)
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "garble":
            lines[i] = draw(st.text(max_size=30))
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        if not lines:
            lines = [""]
    return "\r\n".join(lines)


@st.composite
def message(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(["object", "object", "object", "text", "bytes", "array"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "array":
        return json.dumps(draw(st.lists(json_values, max_size=5)))
    body: dict[str, Any] = {"type": draw(st.sampled_from(TYPES) | st.text(max_size=10))}
    for key in draw(st.lists(st.sampled_from(
            ["sdp", "token", "version", "text_sha256", "user_agent", "audio_processing",
             "video_settings", "resume", "extra"]), max_size=4, unique=True)):
        body[key] = draw(mutated_sdp()) if key == "sdp" and draw(st.booleans()) else draw(json_values)
    return json.dumps(body)


def test_fuzzed_signaling_never_breaks_the_server(server: ServerProcess, bots: BotFactory) -> None:
    room = server.create_room("fuzz")
    invite = server.invite(room, "fuzzer")
    welcome_seen: dict[str, Any] = {}
    sent = {"messages": 0}
    closes: list[int] = []

    # messages after a close are not sent, and how many that is depends on timing: 320 examples
    # send about 1300 (999 once in CI), so another fixed round runs while under the 1000
    @settings(max_examples=320, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(messages=st.lists(message(), min_size=1, max_size=12), authenticate=st.booleans())
    def run(messages: list[str | bytes], authenticate: bool) -> None:
        with connect(f"ws://127.0.0.1:{server.port}/api/v1/signal", open_timeout=10,
                     max_size=2**20) as ws:
            try:
                if authenticate:
                    ws.send(json.dumps({"type": "hello", "token": invite["token"]}))
                    welcome = json.loads(ws.recv(timeout=10))
                    if welcome["type"] == "welcome":
                        welcome_seen.update(welcome)
                        consent = welcome["consent"]
                        ws.send(json.dumps({"type": "consent", "version": consent["version"],
                                            "text_sha256": consent["text_sha256"]}))
                for m in messages:
                    ws.send(m)
                    sent["messages"] += 1
                while True:
                    reply = ws.recv(timeout=0.06)  # loopback answers in milliseconds
                    if isinstance(reply, str):
                        answer = json.loads(reply)
                        assert answer["type"] in SERVER_TYPES, answer
                        if answer["type"] == "error":
                            assert answer["code"] in ERROR_CODES, answer
            except TimeoutError:
                pass
            except ConnectionClosed as exc:
                if exc.rcvd is not None:
                    closes.append(exc.rcvd.code)
                    assert exc.rcvd.code in (1000, 4400, 4401, 4404, 4409, 4410, 4413, 4499), exc
                    return
                raise

    for round_ in range(3):
        seed(round_)(run)()
        if sent["messages"] >= 1000:
            break
    print(f"fuzz: {sent['messages']} messages sent, {len(closes)} closes")
    assert sent["messages"] >= 1000, sent
    assert welcome_seen, "never got past hello"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert "Traceback" not in server.log() and "500 Internal" not in server.log()

    # the server still relays and records
    other = server.create_room("after the fuzz")
    session = start_recording(server, other)
    running = [bots(server.invite(other, n)["url"], 30, "--preencoded") for n in ("A", "B")]
    wait_for(lambda: publishing(server, other, 2), 20, "both performers")
    time.sleep(2)  # two seconds relayed and recorded
    for bot in running:
        stats = bot.peer_stats(finish=True)
        assert stats["fps"] >= 25, stats
    assert stop_recording(server, other)["state"] == "complete"
    assert verify(server.session_dir(session["session_id"]))[0] == 0
