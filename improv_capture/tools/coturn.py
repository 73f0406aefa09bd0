"""A coturn TURN server (Debian's ``coturn`` package) next to improv-capture: its configuration
for the server's credential scheme, and its process.

One source of truth for what coturn runs with: ``scripts/serve --turn`` (:func:`main`), the
tests' harness (tests/turn.py) and docs/deploy.md all use :class:`CoturnConfig`.

Performers only ever talk to the capture server, never to each other, so the only peer a
relay needs is the capture server: every other address is denied (``denied-peer-ip`` for
everything, ``allowed-peer-ip`` for the server's addresses), which keeps the TURN server from
being used as an open relay into the machine's networks or anywhere else.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# coturn and the server end with the process that started them, even when it is killed
from improv_capture.cluster.workers import die_with_parent
from improv_capture.settings import Settings

TURNSERVER = "/usr/bin/turnserver"
#: coturn's usual ports: TURN over UDP and TCP, and over TLS.
TURN_PORT = 3478
TURNS_PORT = 5349
#: Relay ports (one per allocation). The only peer is the capture server, so with coturn on
#: the server's own machine these ports never need to be open in a firewall.
RELAY_PORTS = (49152, 49951)
#: Allocations per user name (one welcome's credential): a browser gathers on each of the
#: three TURN URLs for each of its two connections, and may restart ICE once.
USER_QUOTA = 12
#: Allocations in all: four performers with two connections each in 100 rooms.
TOTAL_QUOTA = 800
#: How long :meth:`CoturnProcess.start` waits for coturn to answer on its ports.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
ALL_IPV4 = "0.0.0.0-255.255.255.255"
ALL_IPV6 = "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


@dataclass(frozen=True)
class CoturnConfig:
    """A coturn for improv-capture's credentials (``use-auth-secret``): TURN over UDP, TCP and
    (with a certificate) TLS on ``listen``, relaying to ``peers`` only."""

    #: Addresses coturn listens on and relays from (this machine's, reachable by performers).
    listen: Sequence[str]
    #: The secret shared with improv-capture (IMPROV_TURN_SECRET).
    secret: str
    #: The only relay peers: the capture server's ICE addresses (or ranges ``a-b`` of them).
    peers: Sequence[str]
    realm: str = "improv-capture"
    port: int = TURN_PORT
    tls_port: int = TURNS_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    relay_ports: tuple[int, int] = RELAY_PORTS
    #: ``public`` or ``public/private``: coturn behind a 1:1 NAT (a cloud's elastic address).
    external_ip: str | None = None

    def render(self, state_dir: Path) -> str:
        """The config file's text; ``state_dir`` holds coturn's own files (its user database,
        which this scheme leaves empty, and its pid file), never /var or /etc."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("coturn needs both a TLS certificate and its key, or neither")
        lines = [
            "# coturn for improv-capture (improv_capture/tools/coturn.py; docs/deploy.md)",
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            f"realm={self.realm}",
            *(f"listening-ip={a}" for a in self.listen),
            *(f"relay-ip={a}" for a in self.listen),
            *([f"external-ip={self.external_ip}"] if self.external_ip else []),
            f"listening-port={self.port}",
            f"min-port={self.relay_ports[0]}",
            f"max-port={self.relay_ports[1]}",
            "fingerprint",
            # WebRTC relays UDP only, and browsers reach TURN over UDP, TCP or TLS, never DTLS
            "no-tcp-relay",
            "no-dtls",
            "no-rfc5780",
            "no-multicast-peers",
            f"denied-peer-ip={ALL_IPV4}",
            f"denied-peer-ip={ALL_IPV6}",
            *(f"allowed-peer-ip={p}" for p in self.peers),
            f"user-quota={USER_QUOTA}",
            f"total-quota={TOTAL_QUOTA}",
            "stale-nonce=600",
            "no-software-attribute",
            "no-cli",
            "log-file=stdout",
            "simple-log",
            "verbose",
            f"userdb={state_dir / 'turndb'}",
            f"pidfile={state_dir / 'turnserver.pid'}",
        ]
        if self.tls_cert is not None:
            lines += [f"tls-listening-port={self.tls_port}", f"cert={self.tls_cert}",
                      f"pkey={self.tls_key}", "no-tlsv1", "no-tlsv1_1"]
        else:
            lines.append("no-tls")
        return "\n".join(lines) + "\n"

    def urls(self, host: str | None = None) -> list[str]:
        """The TURN URLs of this coturn (IMPROV_TURN_URLS): UDP, TCP, and TLS with a
        certificate; ``host`` is the name clients use (the certificate's, for TLS)."""
        name = host or self.listen[0]
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"
        urls = [f"turn:{name}:{self.port}?transport=udp", f"turn:{name}:{self.port}?transport=tcp"]
        if self.tls_cert is not None:
            urls.append(f"turns:{name}:{self.tls_port}?transport=tcp")
        return urls


def stun_binding_answered(address: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a STUN server answers a binding request over UDP at ``address``:``port``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, (address, port))
            answer = sock.recv(2048)
        except OSError:
            return False
    return len(answer) >= 20 and answer[:2] == b"\x01\x01" and answer[8:20] == transaction


def tcp_accepts(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError:
        return False
    return True


@dataclass
class CoturnProcess:
    """``turnserver`` in the foreground with ``config`` (no daemon, no CLI, no /etc file),
    its log on ``log`` (a file, or None: this process's own stdout)."""

    config: CoturnConfig
    state_dir: Path
    log: IO[Any] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.state_dir / "turnserver.conf"

    def start(self, timeout: float = START_TIMEOUT_S) -> CoturnProcess:
        """Start coturn and return once it answers on every port; stopped again (and
        RuntimeError) when it exits or stays silent for ``timeout`` seconds."""
        if not Path(TURNSERVER).exists():
            raise RuntimeError(f"{TURNSERVER} not found: apt-get install coturn")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:  # it holds the secret
            f.write(self.config.render(self.state_dir))
        self.proc = subprocess.Popen(
            [TURNSERVER, "-c", str(self.config_path), "--no-cli", "--log-file=stdout"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - a prctl, no lock
        )
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout: float) -> None:
        assert self.proc is not None
        address, config = self.config.listen[0], self.config
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited with {self.proc.returncode}")
            if (stun_binding_answered(address, config.port, 0.2)
                    and tcp_accepts(address, config.port)
                    and (config.tls_cert is None or tcp_accepts(address, config.tls_port))):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"turnserver did not answer on {address} in {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except ProcessLookupError:
            self.proc.wait(timeout=STOP_TIMEOUT_S)


# scripts/serve --turn


def _serve_with_turn(serve_args: list[str]) -> int:
    """Run coturn and ``improv-capture serve`` together; either one ending stops the other."""
    from improv_capture import secrets_store
    from improv_capture.cli import build_parser

    args = build_parser().parse_args(["serve", *serve_args])
    overrides = {k: v for k in ("host", "port", "data_dir", "tls_cert", "tls_key")
                 if (v := getattr(args, k, None)) is not None}
    # the secret alone is fine here (this launcher adds the URLs): not checked until serve
    secret = os.environ.get("IMPROV_TURN_SECRET")
    settings = Settings(**overrides, turn_secret=None)
    if settings.turn_urls:
        return _fail("IMPROV_TURN_URLS is set: --turn runs its own coturn; unset it, or run "
                     "your coturn yourself and drop --turn")
    try:
        listen = _turn_addresses(settings)
    except ValueError as exc:
        return _fail(str(exc))
    name = _public_name(settings, listen)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secret or secrets_store.load_or_create(settings.data_dir / "turn_secret")
    # TURN over TLS with the server's own certificate (its name is the public URL's host)
    cert, key = getattr(settings, "tls_cert", None), getattr(settings, "tls_key", None)
    config = CoturnConfig(listen=listen, secret=secret, peers=listen,
                          tls_cert=Path(cert).resolve() if cert and key else None,
                          tls_key=Path(key).resolve() if cert and key else None)
    env = {**os.environ, "IMPROV_TURN_URLS": json.dumps(config.urls(name)),
           "IMPROV_TURN_SECRET": secret}
    # the relay's address is one of the server's own: let its ICE checks go there
    private = [f"{a}/32" if ":" not in a else f"{a}/128" for a in listen
               if not ipaddress.ip_address(a).is_global]
    if private:
        env["IMPROV_ICE_ALLOWED_NETWORKS"] = json.dumps(
            sorted({*settings.ice_allowed_networks, *private}))
    with tempfile.TemporaryDirectory(prefix="improv-coturn-") as state:
        coturn = CoturnProcess(config, Path(state))
        try:
            coturn.start()
        except RuntimeError as exc:
            return _fail(str(exc))
        print(f"improv-capture: coturn on {', '.join(config.urls(name))} "
              f"(relaying to {', '.join(listen)} only)", flush=True)
        server = subprocess.Popen([sys.executable, "-m", "improv_capture.cli", "serve",
                                   *serve_args], env=env,
                                  preexec_fn=die_with_parent)  # noqa: PLW1509 - a prctl, no lock
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, stop)
        try:
            while server.poll() is None:
                if coturn.proc is not None and coturn.proc.poll() is not None and not stopping:
                    print("improv-capture: coturn exited; stopping the server", file=sys.stderr)
                    stop(signal.SIGTERM, None)
                time.sleep(0.5)
        finally:
            coturn.stop()
        code = server.returncode
        if stopping and code in (0, -signal.SIGTERM):
            return 0  # uvicorn ends by re-raising the SIGTERM it handled
        return code if code >= 0 else 128 - code


def _turn_addresses(settings: Settings) -> list[str]:
    """Where coturn listens and relays: the server's own ICE addresses (this machine's, by
    the server's own rule), or the address it listens on; ValueError when there is none."""
    from improv_capture.media.sdp_policy import gathering_addresses

    listen = gathering_addresses(settings.ice_addresses, settings.public_url)
    if not listen and settings.host not in ("0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
        listen = [settings.host]
    if not listen:
        raise ValueError(
            "--turn needs this machine's public address: set IMPROV_PUBLIC_URL (e.g. "
            "https://capture.example.org, a name resolving to this machine), "
            "IMPROV_ICE_ADDRESSES, or --host ADDRESS")
    return listen


def _public_name(settings: Settings, listen: list[str]) -> str:
    """The name in the TURN URLs: the public URL's host (a TLS certificate's name), else
    the first address."""
    from urllib.parse import urlsplit

    return (urlsplit(settings.public_url).hostname if settings.public_url else None) or listen[0]


def _fail(message: str) -> int:
    print(f"improv-capture: {message}", file=sys.stderr)
    return 2


USAGE = """usage: scripts/serve --turn [SERVE ARGUMENTS]

Runs `improv-capture serve SERVE ARGUMENTS` and, next to it, a coturn TURN server (Debian's
coturn package) on this machine's public address (IMPROV_PUBLIC_URL's host, IMPROV_ICE_ADDRESSES
or --host), which performers behind firewalls reach over UDP or TCP 3478, or TLS 5349 when
the server has a certificate (--tls-cert, --tls-key). The server hands out credentials for it
with IMPROV_TURN_SECRET, generated into DATA_DIR/turn_secret when unset. Stopping one stops
the other. See docs/deploy.md."""


def main(argv: list[str] | None = None) -> int:
    serve_args = sys.argv[1:] if argv is None else argv
    if serve_args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if shutil.which(TURNSERVER) is None:
        return _fail(f"{TURNSERVER} not found: apt-get install coturn")
    return _serve_with_turn(serve_args)


if __name__ == "__main__":
    raise SystemExit(main())
