"""The one coturn harness of the tests: Debian's /usr/bin/turnserver with the configuration
`scripts/serve --turn` runs (improv_capture/tools/coturn.py), on an address of the test's
choice (the network harness's server address, tests/netns.py), relaying only to the harness's
networks.

Usage::

    from tests.turn import Coturn, coturn_fixture  # noqa: F401 - the `coturn` fixture

    def test_relay(coturn: Coturn, hosts: Network) -> None:
        coturn.start(hosts.server_address, SECRET)           # + tls_cert, tls_key: turns:
        server = hosts.server(env={"IMPROV_TURN_URLS": json.dumps(coturn.urls()),
                                   "IMPROV_TURN_SECRET": SECRET})
        ...
        assert coturn.sessions()                             # what coturn relayed, from its log

One coturn per address: its ports are coturn's usual 3478 (UDP and TCP) and 5349 (TLS), so
every harness network (its own server address) can have one. coturn runs in the foreground
(no daemon) in the root namespace, with its config file, pid file
and user database in a temporary directory (never /etc or /var), no CLI, and its log captured
to a file; :meth:`Coturn.stop` (the fixture calls it, pass or fail) ends it and removes the
directory. Needs root only for what the network harness needs; coturn itself does not.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from improv_capture.tools.coturn import TURNSERVER, CoturnConfig, CoturnProcess
from tests.netns import HARNESS_NETWORK

#: the network harness's addresses as a range, the form coturn's allowed-peer-ip takes
_HARNESS = ipaddress.ip_network(HARNESS_NETWORK)
HARNESS_PEERS = f"{_HARNESS[0]}-{_HARNESS[-1]}"

#: coturn's log line of each allocation (``verbose``): "session 001000000000000001: new,
#: realm=<improv-capture>, username=<1750000000:abc>, lifetime=600" (+ ", cipher=...,
#: method=TLSv1.3" over TLS); the user name only, never the password
ALLOCATION = re.compile(r"session (\d+): new, realm=<[^>]*>, username=<([^>]*)>")
#: ...and, when it ends, what it relayed to and from its peer, then how it ended:
#: "session 001: peer usage: realm=<...>, username=<U>, rp=310, rb=2730, sp=305, sb=2800"
#: "session 001: closed (2nd stage), user <U> realm <...> origin <>, local 198.18.1.1:3478,
#: remote 198.19.2.2:40625, reason: TCP connection closed by client (callback)"
PEER_USAGE = re.compile(r"session (\d+): peer usage: .*?rp=(\d+), rb=\d+, sp=(\d+),")
CLOSED = re.compile(r"session (\d+): closed \(2nd stage\), user <([^>]*)> .*?, "
                    r"remote ([\d.]+):\d+, reason: (.*)")


@dataclass(frozen=True)
class TurnSession:
    """An allocation coturn has closed."""

    #: its TURN user name: "<expiry>:<performer id>" (or ":operator")
    user: str
    #: how the client reached coturn: udp, tcp or tls
    transport: str
    #: the client's address as coturn saw it
    client: str
    #: packets relayed from the peer (the capture server) to the client, and back
    from_peer: int
    to_peer: int


class Coturn:
    """A coturn for one test or module: :meth:`start`, :meth:`urls`, :meth:`stop`."""

    def __init__(self) -> None:
        self.process: CoturnProcess | None = None
        self.config: CoturnConfig | None = None
        self._dir: Path | None = None
        self._log: IO[Any] | None = None

    def start(self, listen_address: str, secret: str, tls_cert: Path | None = None,
              tls_key: Path | None = None) -> Coturn:
        """Start coturn on ``listen_address`` (TURN over UDP and TCP on 3478, and TLS on 5349
        with ``tls_cert`` and ``tls_key``), relaying from that address to the harness's
        networks only, with ``secret`` as its shared secret (use-auth-secret); returns once
        it answers on every port. Stops what it started when it fails."""
        if self.process is not None:
            raise RuntimeError("this coturn is running already")
        if shutil.which(TURNSERVER) is None:
            pytest.fail(f"{TURNSERVER} not found: apt-get install coturn (scripts/test does)",
                        pytrace=False)
        self._dir = Path(tempfile.mkdtemp(prefix="improv-coturn-"))
        self.config = CoturnConfig(listen=[listen_address], secret=secret,
                                   peers=[HARNESS_PEERS], tls_cert=tls_cert, tls_key=tls_key)
        self._log = open(self._dir / "turnserver.log", "wb")  # noqa: SIM115 - closed by stop
        self.process = CoturnProcess(self.config, self._dir / "state", log=self._log)
        try:
            self.process.start()
        except RuntimeError as exc:
            log = self.log()
            self.stop()
            raise RuntimeError(f"{exc}; coturn's log:\n{log}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def urls(self, host: str | None = None) -> list[str]:
        """IMPROV_TURN_URLS for this coturn: turn: over UDP and TCP, and turns: (TLS) when it
        has a certificate; ``host`` is the name clients use (default: the listen address)."""
        assert self.config is not None, "coturn is not started"
        return self.config.urls(host)

    def log(self) -> str:
        """Everything coturn logged so far."""
        if self._dir is None or not (self._dir / "turnserver.log").exists():
            return ""
        return (self._dir / "turnserver.log").read_text(errors="replace")

    def allocations(self) -> list[str]:
        """The TURN user name of every allocation coturn made so far (open or closed)."""
        return [user for _, user in ALLOCATION.findall(self.log())]

    def sessions(self) -> list[TurnSession]:
        """The allocations coturn has closed so far, from its log. A client that closes its
        own (a bot that leaves) is logged within a second or two; one that vanishes, only
        when its allocation times out (10 minutes)."""
        usage: dict[str, tuple[int, int]] = {}
        found = []
        for line in self.log().splitlines():
            if (counted := PEER_USAGE.search(line)) is not None:
                usage[counted[1]] = (int(counted[2]), int(counted[3]))
            elif (closed := CLOSED.search(line)) is not None and closed[2]:
                reason = closed[4]
                transport = ("tls" if reason.startswith("TLS") else
                             "tcp" if reason.startswith("TCP") else "udp")
                from_peer, to_peer = usage.pop(closed[1], (0, 0))
                found.append(TurnSession(closed[2], transport, closed[3], from_peer, to_peer))
        return found

    def stop(self) -> None:
        """End coturn (SIGTERM, then SIGKILL) and remove its directory; safe to call twice."""
        try:
            if self.process is not None:
                self.process.stop()
        finally:
            self.process = None
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None


def self_signed_cert(address: str, directory: Path) -> tuple[Path, Path]:
    """A certificate for ``address`` (an IP address, in its subjectAltName) signed by its
    own key, valid for a day, and that key, as PEM files in ``directory``: for coturn's
    turns: listener; a client trusts it by taking the certificate as its CA (SSL_CERT_FILE)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(name="coturn")
def coturn_fixture() -> Iterator[Coturn]:
    """A :class:`Coturn` to :meth:`~Coturn.start`; stopped at the end, pass or fail."""
    turn = Coturn()
    try:
        yield turn
    finally:
        turn.stop()
