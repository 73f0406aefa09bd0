"""The SDP policy on its own (improv_capture/media/sdp_policy.py): which remote ICE candidates
the server may send checks to, and what a filtered offer keeps. Against real server processes:
tests/server/test_signaling_hardening.py."""

from __future__ import annotations

import re

import pytest

from improv_capture.media import aiortc_hooks
from improv_capture.media.sdp_policy import NegotiationError, SdpPolicy, parse_networks
from tests.helpers import offer_sdp, with_candidates

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def loopback_peers() -> None:
    """The offers' own candidates are gathered on loopback only."""
    aiortc_hooks.restrict_ice_addresses(["127.0.0.1"])


def test_the_policy_keeps_only_candidates_the_server_may_check() -> None:
    policy = SdpPolicy(16384, 256, 32, parse_networks(["10.1.0.0/16"]))
    kept = ["8.8.8.8", "2001:4860:4860::8888", "10.1.2.3"]
    dropped = [
        "169.254.169.254", "fe80::1", "224.0.0.251", "ff02::1", "255.255.255.255", "0.0.0.0",
        "240.0.0.1", "127.0.0.1", "::1", "192.168.1.2", "10.2.0.1", "fd00::2",
        "abcd-1234.local", "example.com", "::ffff:169.254.169.254",
    ]
    for address in kept:
        assert policy.allows_address(address), address
    for address in dropped:
        assert not policy.allows_address(address), address
    # even an operator's allowed network never opens link-local or multicast
    wide = SdpPolicy(16384, 256, 32, parse_networks(["0.0.0.0/0", "::/0"]))
    for address in ("169.254.169.254", "224.0.0.251", "fe80::1", "255.255.255.255"):
        assert not wide.allows_address(address), address


async def test_filtered_offers_lose_candidates_and_end_of_candidates() -> None:
    policy = SdpPolicy(16384, 256, 32)
    offer = with_candidates(await offer_sdp(),
                            "1 1 udp 2130706431 169.254.169.254 9 typ host",
                            "2 1 udp 2130706431 abc.local 9 typ host",
                            "3 1 tcp 2130706431 8.8.8.8 9 typ host tcptype passive",
                            "4 1 udp 2130706431 8.8.4.4 9 typ host")
    filtered = policy.publish_offer(offer)
    assert re.findall(r"a=candidate:\S+ \d \S+ \d+ (\S+)", filtered) == ["8.8.4.4", "8.8.4.4"]
    assert "end-of-candidates" not in filtered
    with pytest.raises(NegotiationError):
        policy.answer(offer, ["audio", "video", "video"])


async def test_the_candidate_cap_counts_what_the_server_could_check() -> None:
    """Firefox lists, per address, a UDP and a TCP candidate for RTP and for RTCP (component 2,
    until rtcp-mux is agreed): 4 lines per address. 12 addresses pass a cap of 32, since only
    the UDP component-1 candidates can make the server send checks; 33 of those do not."""
    policy = SdpPolicy(16384, 256, 32)
    firefox = [
        line
        for i in range(12)
        for component in (1, 2)
        for line in (f"{i} {component} UDP 2122187007 8.8.{i}.8 {5000 + component} typ host",
                     f"{i} {component} TCP 2105458943 8.8.{i}.8 9 typ host tcptype active")
    ]
    filtered = policy.publish_offer(with_candidates(await offer_sdp(), *firefox))
    kept = re.findall(r"a=candidate:\S+ (\d) (\S+) \d+ (\S+)", filtered)
    assert len(kept) == 2 * 2 * 12 and all(transport == "UDP" for _, transport, _ in kept)
    too_many = [f"{i} 1 udp 2130706431 8.8.{i}.8 9 typ host" for i in range(33)]
    with pytest.raises(NegotiationError, match="33 ICE candidates"):
        policy.publish_offer(with_candidates(await offer_sdp(), *too_many))
