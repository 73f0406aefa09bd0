"""Performers on test hosts (network namespaces, tests/netns.py) in real Chromium: the page over
HTTPS from the server itself, and the page's pre-join network check.

- HTTPS: the server serves TLS with a certificate the test makes for the server address
  198.18.S.1 (a SAN IP; tests/turn.py's self-signed one, its own CA), which Chromium trusts by
  its key (--ignore-certificate-errors-spki-list: no error page bypassed, the origin is
  secure): a performer on another host opens the https invite, gets its camera and joins; a
  bot joins over WSS; they see each other. Over plain http from a non-localhost address the
  page says it needs HTTPS.
- The network check (static/js/performer/network_check.js, api/network_probe.py): a plain host
  says "UDP direct" with an uplink figure; a host whose router drops UDP says it cannot connect
  and shows the advice where the server has no TURN, and "relay over tcp" where it has (coturn,
  tests/turn.py); a host capped at 600 kbit/s up measures under the cap and says the call will
  not work well, with the advice.

One network, coturn, two servers (https with TURN; plain http without, which the UDP-blocked
host's Chromium alone treats as secure) and one Chromium per host for the whole module; the
four checks run at once, each host on its own link (the blocked one waits out its connect
timeout meanwhile).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import publishing, wait_for
from tests.netns import HarnessUnavailable, Host, NetnsServer, Network
from tests.static.pages import CHROMIUM_ARGS, accept_and_join, open_invite, wait_playing
from tests.turn import Coturn, self_signed_cert

pytestmark = pytest.mark.network

CAP_UP = 600_000  # bit/s
#: the standard profile's live video cap (1.2 Mbit/s) and the call's overhead on top
STANDARD_NEED_KBPS = 1300
CHECK_DONE = "window.improv && window.improv.networkCheck.state === 'done'"
TURN_SECRET = secrets.token_hex(16)


def spki_sha256(cert: Path) -> str:
    """The base64 SHA-256 of a certificate's public key, as Chromium's
    --ignore-certificate-errors-spki-list takes it."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass
class TlsServer(NetnsServer):
    """A server on the harness's address that serves HTTPS and WSS itself."""

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"wss://{self.address}:{self.port}{path}"


@dataclass
class Scene:
    https: TlsServer  # with TURN
    http: NetnsServer  # without
    coturn: Coturn
    plain: Host
    blocked: Host
    capped: Host
    browsers: dict[str, Any]  # host name -> Chromium running in that host
    checks: dict[str, tuple[Any, dict[str, Any]]]  # name -> (a page checking, its invite)


def start_server(network: Network, server: NetnsServer) -> NetnsServer:
    network.servers.append(server)  # stopped when the network closes
    return server.start()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    from playwright.sync_api import sync_playwright

    workdir = tmp_path_factory.mktemp("https-netcheck")
    network, coturn = Network(workdir / "netns"), Coturn()
    try:
        network.open()
    except HarnessUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        address = network.server_address
        cert, key = self_signed_cert(address, workdir / "tls")
        plain, blocked = network.add(), network.add(block_udp=True)
        capped = network.add(rate_up=CAP_UP)
        coturn.start(address, TURN_SECRET)  # TURN over UDP and TCP
        https = TlsServer(workdir / "data-https", address=address, env={
            "IMPROV_TLS_CERT": str(cert), "IMPROV_TLS_KEY": str(key),
            "IMPROV_TURN_URLS": json.dumps(coturn.urls()), "IMPROV_TURN_SECRET": TURN_SECRET})
        https.env["IMPROV_PUBLIC_URL"] = https.url
        with pytest.MonkeyPatch.context() as env, sync_playwright() as playwright:
            env.setenv("SSL_CERT_FILE", str(cert))  # httpx here and the bots trust it
            with ThreadPoolExecutor(2) as pool:
                starting = [pool.submit(start_server, network, server) for server in (
                    https, NetnsServer(workdir / "data-http", address=address))]
                http = starting[1].result()
                starting[0].result()
            trusted = f"--ignore-certificate-errors-spki-list={spki_sha256(cert)}"
            browsers: dict[str, Any] = {}
            try:
                for host in (plain, blocked, capped):
                    extra = [f"--unsafely-treat-insecure-origin-as-secure={http.url}"] if (
                        host is blocked) else []
                    browsers[host.name] = playwright.chromium.launch(
                        executable_path=str(host.chromium_wrapper(workdir)),
                        args=CHROMIUM_ARGS + [trusted, *extra])
                room, bare_room = https.create_room("network check"), http.create_room("no TURN")
                checks = {}
                for name, host, server, room_id in (
                        ("plain", plain, https, room), ("capped", capped, https, room),
                        ("blocked, TURN", blocked, https, room),
                        ("blocked, no TURN", blocked, http, bare_room)):
                    invite = server.invite(room_id, name)
                    checks[name] = (open_invite(browsers[host.name], invite["url"]), invite)
                yield Scene(https, http, coturn, plain, blocked, capped, browsers, checks)
            finally:
                for browser in browsers.values():
                    browser.close()
    finally:
        try:
            coturn.stop()
        finally:
            network.close()


def check_result(page: Any) -> dict[str, Any]:
    """The page's network check once done: `window.improv.networkCheck`, and what it shows."""
    page.wait_for_function(CHECK_DONE, timeout=30000)
    result = dict(page.evaluate("window.improv.networkCheck"))
    box = page.get_by_test_id("network-check")
    result["shown"] = box.inner_text()
    result["advice_shown"] = page.get_by_test_id("network-advice").is_visible()
    return result


def test_a_plain_host_reaches_the_server_by_udp_and_measures_its_uplink(scene: Scene) -> None:
    result = check_result(scene.checks["plain"][0])
    assert result["path"] == "udp" and result["label"] == "UDP direct", result
    assert result["candidateType"] in ("host", "srflx", "prflx"), result
    # an uncapped veth: far above what the call needs
    assert result["uplinkKbps"] > STANDARD_NEED_KBPS and result["verdict"] == "good", result
    assert "UDP direct" in result["shown"] and "Mbit/s" in result["shown"], result["shown"]
    assert not result["advice_shown"]


def test_a_host_without_udp_reaches_the_server_through_turn_over_tcp(scene: Scene) -> None:
    page, invite = scene.checks["blocked, TURN"]
    result = check_result(page)
    assert result["path"] == "relay" and result["label"] == "relay over tcp", result
    assert result["candidateType"] == "relay" and result["relayProtocol"] == "tcp", result
    # coturn saw it: an allocation with the credential this performer's welcome carried
    assert any(user.endswith(f":{invite['performer_id']}") for user in scene.coturn.allocations())
    # the relay runs on this machine: fast enough, and the page says what the relay means
    assert result["uplinkKbps"] > STANDARD_NEED_KBPS and result["verdict"] == "good", result
    assert "relay over tcp" in result["shown"] and "blocks direct UDP" in result["shown"]
    assert not result["advice_shown"]


def test_a_capped_uplink_is_measured_under_the_cap_and_advised(scene: Scene) -> None:
    result = check_result(scene.checks["capped"][0])
    assert result["path"] == "udp", result
    # what crossed the tbf cap after the warm-up (DTLS datagrams: without their UDP/IP
    # headers, which tbf counts): under the cap, and close to it
    assert 0.6 * CAP_UP / 1000 < result["uplinkKbps"] < CAP_UP / 1000, result
    assert result["needKbps"] == STANDARD_NEED_KBPS and result["verdict"] == "poor", result
    assert "will not work well" in result["shown"] and result["advice_shown"], result
    assert "wired" in result["shown"] and "Close other apps" in result["shown"]
    scene.checks["capped"][0].screenshot(path="test-artifacts/network-check-poor.png")


def test_an_https_invite_from_another_address_gets_the_camera_and_joins(scene: Scene) -> None:
    server, host = scene.https, scene.plain
    room = server.create_room("https")
    invite, other = server.invite(room, "browser"), server.invite(room, "bot")
    assert invite["url"].startswith(f"https://{server.address}:{server.port}/join#invite=")
    bot = host.bot(other["url"], 60)  # over WSS too, trusting the test CA
    page = open_invite(scene.browsers[host.name], invite["url"])
    assert page.evaluate("window.isSecureContext && location.protocol") == "https:"
    accept_and_join(page)  # join is enabled only once the camera and microphone are live
    page.wait_for_function("document.body.dataset.state === 'joined'", timeout=30000)
    wait_for(lambda: publishing(server, room, 2), 30, "both performers publishing")
    wait_playing(page, other["performer_id"])
    code, output, report = bot.finish()
    assert code == 0, output
    assert report["received"][invite["performer_id"]]["video_frames"] > 0, report


def test_plain_http_from_another_address_says_it_needs_https(scene: Scene) -> None:
    server = scene.http
    invite = server.invite(server.create_room("http"), "insecure")
    assert invite["url"].startswith("http://")
    page = open_invite(scene.browsers[scene.plain.name], invite["url"])
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=15000)
    error = page.get_by_test_id("error")
    assert error.is_visible() and "HTTPS" in error.inner_text(), error.inner_text()
    assert page.evaluate("window.isSecureContext") is False
    assert page.get_by_test_id("join").is_disabled()
    assert page.evaluate("window.improv.networkCheck.state") == "idle"  # nothing ran


def test_a_host_without_udp_and_no_turn_cannot_connect(scene: Scene) -> None:
    """Last: its check waits out the page's connect timeout (8 s) while the others run."""
    result = check_result(scene.checks["blocked, no TURN"][0])
    assert result["path"] == "none" and result["verdict"] == "blocked", result
    assert "Cannot connect" in result["shown"] and result["advice_shown"], result
    assert "VPN" in result["shown"]
    # joining stays possible: the check blocks nothing
    page = scene.checks["blocked, no TURN"][0]
    page.get_by_test_id("consent-accept").click()
    page.wait_for_function("!document.querySelector('[data-testid=join]').disabled",
                           timeout=15000)
