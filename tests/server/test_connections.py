"""The publish connection's answer (media/connections.py): it asks the performer's browser to
keep its audio and send a lost packet again (NACK on Opus), which no browser offers on its
own. Chromium honours it: on a 5 % lossy link it retransmitted 26 of 601 audio packets and
the recording kept all of them (docs/benchmarks.md, "Real networks")."""

from __future__ import annotations

import re

import pytest

from improv_capture.media import aiortc_hooks
from improv_capture.media.connections import PublishConnection, with_audio_nack
from tests.helpers import offer_sdp

pytestmark = pytest.mark.process  # a real aiortc offer and answer, in process

CHROME_LIKE = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10\r\n"
    "a=rtpmap:63 red/48000/2\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
    "a=rtcp-fb:96 nack\r\n"
)


def test_with_audio_nack_adds_nack_to_opus_only() -> None:
    answer = with_audio_nack(CHROME_LIKE)
    audio, video = answer.split("m=")[1:]
    assert "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 nack\r\n" in audio
    assert "rtcp-fb:63" not in audio
    assert video == CHROME_LIKE.split("m=")[2]  # video untouched
    assert with_audio_nack(answer) == answer  # once


async def test_the_publish_answer_asks_for_audio_nack() -> None:
    aiortc_hooks.restrict_ice_addresses(["127.0.0.1"])
    connection = PublishConnection("p_test", [], {"audio": 50, "video": 120}, 0.5,
                                   on_publication=lambda _p: None)
    try:
        answer = await connection.answer(await offer_sdp())
    finally:
        await connection.close()
    opus = re.search(r"a=rtpmap:(\d+) opus/48000", answer, re.IGNORECASE)
    assert opus and f"a=rtcp-fb:{opus[1]} nack\r\n" in answer, answer
