"""What a session description from a client may hold, checked line by line before aiortc
parses it, and which of its ICE candidates the server may send to.

aiortc turns every m-line into a transceiver (and a task), and aioice sends STUN checks to
every remote candidate, resolving .local names over mDNS: a description is the one input
with which a client makes the server do work and send packets. So, before aiortc sees it:

- a publish offer carries one audio m-line (Opus) and one video m-line (VP8), nothing else; an answer carries exactly the m-lines of our offer, in order;
- sizes are bounded per m-line it may carry (bytes, lines), candidates per description;
- remote candidates are kept only for global unicast addresses and the networks a
  deployment allows (``ice_allowed_networks``); every other candidate line is dropped (a peer
  behind them still connects: its checks reach us and aioice learns it as peer-reflexive).

The server's own gathering addresses (:func:`gathering_addresses`) are decided here too.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: What a performer may publish: the m-line kind and the codec (rtpmap name/rate) it must offer.
PUBLISH_CODECS = {"audio": "opus/48000", "video": "vp8/90000"}
RTP_PROTOCOL = "UDP/TLS/RTP/SAVPF"
CANDIDATE = "a=candidate:"


class NegotiationError(Exception):
    """A description we refuse or could not apply; the message is safe to show the client."""


class PolicySettings(Protocol):
    sdp_max_bytes_per_media: int
    sdp_max_lines_per_media: int
    ice_max_candidates: int
    ice_allowed_networks: list[str]


@dataclass
class Section:
    """One part of a description: the session part (``kind`` None) or one m-line and its
    attribute lines."""

    kind: str | None
    lines: list[str]


def split_sections(sdp: str) -> list[Section]:
    """The description's lines grouped by m-line (line endings dropped)."""
    sections = [Section(None, [])]
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line.startswith("m="):
            sections.append(Section(line[2:].split(" ", 1)[0], []))
        sections[-1].lines.append(line)
    return sections


def media_kinds(sdp: str) -> list[str]:
    """The kinds of a description's m-lines, in order (for our own offers)."""
    return [s.kind for s in split_sections(sdp)[1:] if s.kind is not None]


def parse_networks(cidrs: list[str]) -> tuple[IpNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
    except ValueError as exc:
        raise ValueError(f"IMPROV_ICE_ALLOWED_NETWORKS: {exc}") from exc


def is_forbidden_always(ip: IpAddress) -> bool:
    """Addresses no allowed network can open: nobody is legitimately reached there."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or (ip.is_reserved and not ip.is_loopback)
        or ip == ipaddress.IPv4Address("255.255.255.255")
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


@dataclass(frozen=True)
class SdpPolicy:
    max_bytes_per_media: int
    max_lines_per_media: int
    max_candidates: int
    allowed_networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> SdpPolicy:
        return cls(
            settings.sdp_max_bytes_per_media,
            settings.sdp_max_lines_per_media,
            settings.ice_max_candidates,
            parse_networks(settings.ice_allowed_networks),
        )

    def allows_address(self, host: str) -> bool:
        """Whether the server may send ICE checks to ``host`` (an IP literal; names never)."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False  # a hostname (.local mDNS name) or a scoped IPv6 address
        if is_forbidden_always(ip):
            return False
        if any(ip in network for network in self.allowed_networks):
            return True
        return ip.is_global

    def publish_offer(self, sdp: object) -> str:
        """A performer's publish offer, checked and with its candidates filtered."""
        text, sections = self._split(sdp, "offer", media_allowed=len(PUBLISH_CODECS))
        seen: set[str] = set()
        for section in sections[1:]:
            kind = section.kind or ""
            if kind not in PUBLISH_CODECS:
                raise NegotiationError(f"offer has a {kind!r} m-line: only audio and video")
            if kind in seen:
                raise NegotiationError(f"offer has more than one {kind} m-line")
            seen.add(kind)
            if section.lines[0].split(" ")[2:3] != [RTP_PROTOCOL]:
                raise NegotiationError(f"offer's {kind} m-line is not {RTP_PROTOCOL}")
            codec = PUBLISH_CODECS[kind]
            if not any(
                line.startswith("a=rtpmap:") and line.lower().partition(" ")[2].startswith(codec)
                for line in section.lines
            ):
                raise NegotiationError(f"offer's {kind} m-line lacks {codec}")
        session = sections[0].lines
        for section in sections[1:]:
            for attribute in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"):
                if not any(line.startswith(attribute) for line in section.lines + session):
                    raise NegotiationError("offer lacks ICE or DTLS parameters")
        if len(seen) != len(PUBLISH_CODECS):
            # aiortc cannot answer an offer that leaves one of our transceivers unused
            raise NegotiationError("offer must have one audio and one video m-line")
        return self._filter_candidates(sections)

    def datachannel_offer(self, sdp: object) -> str:
        """A network check's offer (api/network_probe.py): one data-channel m-line
        (``UDP/DTLS/SCTP webrtc-datachannel``) and nothing else, checked and filtered."""
        _, sections = self._split(sdp, "offer", media_allowed=1)
        if sections[1].kind != "application" or sections[1].lines[0].split(" ")[2:4] != [
            "UDP/DTLS/SCTP", "webrtc-datachannel"
        ]:
            raise NegotiationError("offer must be one UDP/DTLS/SCTP webrtc-datachannel m-line")
        return self._filter_candidates(sections)

    def answer(self, sdp: object, offered_kinds: list[str]) -> str:
        """A client's answer to our offer of ``offered_kinds``, checked and filtered."""
        _, sections = self._split(sdp, "answer", media_allowed=len(offered_kinds))
        kinds = [s.kind for s in sections[1:]]
        if kinds != offered_kinds:
            raise NegotiationError(
                f"answer has {len(kinds)} m-lines where the offer has {len(offered_kinds)}"
                if len(kinds) != len(offered_kinds)
                else "answer's m-lines do not match the offer's"
            )
        return self._filter_candidates(sections)

    def _split(self, sdp: object, what: str, media_allowed: int) -> tuple[str, list[Section]]:
        """Cheap checks on the text, then its sections; bounds scale with ``media_allowed``."""
        if not isinstance(sdp, str) or not sdp.strip():
            raise NegotiationError(f"{what} sdp must be a non-empty string")
        if not sdp.startswith("v=0"):
            raise NegotiationError(f"{what} is not an SDP description")
        media = sdp.count("\nm=")
        if media > media_allowed:
            raise NegotiationError(f"{what} has {media} m-lines; at most {media_allowed} allowed")
        max_bytes = self.max_bytes_per_media * max(media_allowed, 1)
        if len(sdp) > max_bytes:
            raise NegotiationError(f"{what} sdp over {max_bytes} bytes")
        max_lines = self.max_lines_per_media * max(media_allowed, 1)
        if sdp.count("\n") + 1 > max_lines:
            raise NegotiationError(f"{what} sdp over {max_lines} lines")
        sections = split_sections(sdp)
        if len(sections) - 1 > media_allowed:  # "\r\r" and other odd breaks hide nothing
            raise NegotiationError(
                f"{what} has {len(sections) - 1} m-lines; at most {media_allowed} allowed"
            )
        if len(sections) == 1:
            raise NegotiationError(f"{what} sdp has no media section")
        # Counted: the candidates that can make us work (UDP, component 1: we require rtcp-mux,
        # and aioice checks nothing else). Firefox also lists TCP candidates and, until rtcp-mux
        # is agreed, RTCP (component 2) ones for every interface: 4 lines per address, which
        # a machine with a few interfaces (VPN, docker, IPv6) takes past the cap; the size caps
        # above bound those lines, and _keep drops the TCP ones.
        candidates = set()
        for section in sections:
            for line in section.lines:
                fields = line.split(" ") if line.startswith(CANDIDATE) else []
                if len(fields) >= 6 and fields[1] == "1" and fields[2].lower() == "udp":
                    candidates.add(tuple(fields[1:6]))
        if len(candidates) > self.max_candidates:
            raise NegotiationError(
                f"{what} has {len(candidates)} ICE candidates; at most {self.max_candidates}"
            )
        return sdp, sections

    def _filter_candidates(self, sections: list[Section]) -> str:
        """The description without the candidates we may not send to. Where one was dropped,
        end-of-candidates goes too: aioice would otherwise fail the section at once when no
        candidate is left, before the peer's own checks teach it a peer-reflexive one."""
        out: list[str] = []
        for section in sections:
            kept = [line for line in section.lines if self._keep(line)]
            if len(kept) != len(section.lines):
                kept = [line for line in kept if line != "a=end-of-candidates"]
            out.extend(kept)
        return "\r\n".join(out) + "\r\n"

    def _keep(self, line: str) -> bool:
        if not line.startswith(CANDIDATE):
            return True
        # a=candidate:foundation component transport priority address port typ type ...
        fields = line[len(CANDIDATE):].split(" ")
        keep = (
            len(fields) >= 8
            and fields[2].lower() == "udp"
            and fields[5].isdigit()
            and 0 < int(fields[5]) < 65536
            and self.allows_address(fields[4])
        )
        if not keep:
            logger.debug("dropped remote ICE candidate %r", line[:200])
        return keep


class GatheringSettings(Protocol):
    ice_addresses: list[str]
    public_url: str | None
    worker_index: int | None


def server_gathering_addresses(settings: GatheringSettings) -> list[str]:
    """:func:`gathering_addresses` at start-up; refuses to start with the reason.

    A cluster worker always gets the router's URL as its public URL, set by hand or not, so
    the router applies the rule and hands its workers the addresses (cluster/workers.py).
    """
    public_url = settings.public_url if settings.worker_index is None else None
    try:
        return gathering_addresses(settings.ice_addresses, public_url)
    except ValueError as exc:
        raise SystemExit(f"improv-capture: {exc}") from None


def gathering_addresses(ice_addresses: list[str], public_url: str | None) -> list[str]:
    """Where the server gathers its own ICE candidates, which every answer reveals.

    ``ice_addresses`` when set; else, with a public URL, the addresses its host resolves
    to that belong to this machine (ValueError when none does: the operator must say);
    else (local use) [] = every interface plus loopback.
    """
    if ice_addresses or not public_url:
        return list(ice_addresses)
    host = urlsplit(public_url).hostname
    if not host:
        raise ValueError(f"IMPROV_PUBLIC_URL {public_url!r} has no host")
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)}
    except OSError:
        resolved = set()
    local = sorted(a for a in resolved if _is_local_address(a))
    if not local:
        raise ValueError(
            f"the public URL's host {host!r} resolves to no address of this machine "
            f"({', '.join(sorted(resolved)) or 'nothing'}), so the server does not know where "
            f"to gather ICE candidates: set IMPROV_ICE_ADDRESSES to the addresses (JSON list) "
            f"that performers' browsers can reach, e.g. IMPROV_ICE_ADDRESSES='[\"203.0.113.7\"]'"
        )
    return local


def _is_local_address(address: str) -> bool:
    """Whether this machine has ``address``: a UDP socket can bind to it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True
