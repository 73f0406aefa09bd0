"""Performer hosts in network namespaces, for the `network` tier: every network test uses this.

Usage (the ``hosts`` fixture is ``hosts_fixture``, imported into the test module)::

    from tests.netns import Network, hosts_fixture  # noqa: F401 - the `hosts` fixture

    pytestmark = pytest.mark.network

    def test_lossy_performer(hosts: Network) -> None:
        home = hosts.add(nat=True, loss=0.05, rate_up=2_000_000)
        server = hosts.server()              # a ServerProcess on hosts.server_address
        room = server.create_room()
        bot = home.bot(server.invite(room, "home")["url"], 30)   # a BotProcess in the host
        ...                                  # chromium: home.chromium_wrapper(tmp_path)

A :class:`Host` is a performer's machine (namespace ``improvnet-h<N>``, interface ``eth0``)
behind its own access router (namespace ``improvnet-r<N>``, interfaces ``lan0`` and ``wan0``),
whose uplink is a veth pair to the root namespace (root side ``imnet<N>``)::

    root ns (server) --imnet<N>/198.18.N.1 ==== wan0/198.18.N.2-- router --lan0 ==== eth0-- host

- plain host: routed, no NAT; the host is 198.19.N.2/24 and the server sees that address;
- ``nat=True``: a home router (MASQUERADE on wan0); the host is 192.168.1.2/24 (every NAT host
  has the same private address, as real home networks do) and the server sees the router's
  198.18.N.2; the root namespace has no route to 192.168.1.0/24.

Every impairment sits on the router, on forwarded traffic, as on a real access link: random loss
(iptables ``statistic`` DROP in FORWARD, per direction), blocked UDP (FORWARD DROP both ways),
rate caps (``tc tbf`` on wan0's egress for the upload, lan0's for the download), UDP blocked
but to one address and port (a TURN server's: ``udp_allowed_to``), an outage (everything
dropped both ways between :meth:`Host.link_down` and :meth:`Host.link_up`). Drops on a
forwarding hop are silent, as on a real network (a DROP in the performer's own OUTPUT chain
would instead fail its ``sendto`` with EPERM). So the root namespace gets no iptables rule and
no qdisc at all; its only changes are the ``imnet*`` veths and the routes through them.

The server runs in the root namespace on the *server address* (198.18.S.1, the root side of one
more veth ``imnet<S>`` whose far end sits in a stub namespace ``improvnet-s<S>``; this kernel has
no dummy interfaces): it binds that address (IMPROV_HOST), which is also its public URL's host
and its only ICE address, and it accepts remote candidates from 198.18.0.0/15 (:func:`server_env`,
:class:`NetnsServer`). Every host reaches it through its router; the test reaches it directly.

Traffic stays on this machine: a router forwards only to 198.18.0.0/15 and answers anything else
"network unreachable" at once (so a host's DNS lookups, which aiortc makes for its default STUN
server, fail in a millisecond instead of a 5 s resolver timeout), and the root namespace does
not forward for the harness.

Cleanup: each index N (1-254) is claimed by a file in /run/improv-netns holding the owner's pid;
:meth:`Network.close` (called by the ``hosts`` fixture even when the test fails) kills what runs
in its namespaces, deletes its links and namespaces and drops its claims; :func:`sweep` (run by
every new Network) removes what a crashed run left behind: anything of a claim whose owner is
dead, and any ``improvnet-*`` namespace or ``imnet*`` link with no live claim. Concurrent runs
(several pytest processes on one machine) get different indexes and leave each other alone.

Needs root, ``ip`` and ``tc`` (iproute2) and ``iptables`` with the nf_tables backend
(scripts/test installs them).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest

from tests.helpers import REPO, BotProcess, ServerProcess, cli

NS_PREFIX = "improvnet-"
LINK_PREFIX = "imnet"
STATE_DIR = Path("/run/improv-netns")
INDEXES = range(1, 255)
#: Every address of the harness: uplinks 198.18.N.0/30, plain hosts' LANs 198.19.N.0/24.
HARNESS_NETWORK = "198.18.0.0/15"
NAT_LAN = "192.168.1"
COMMENT = "improvnet"
#: Link-layer bytes a UDP datagram costs beyond its payload (UDP 8, IPv4 20, Ethernet 14): what
#: tbf counts.
UDP_OVERHEAD = 42


class HarnessUnavailable(RuntimeError):
    """This machine cannot run network tests (not root, a tool missing)."""


def check_tools() -> None:
    """Fail with what is missing, rather than half-build a network."""
    problems = []
    if os.geteuid() != 0:
        problems.append("network tests need root (network namespaces, veths, iptables)")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("iptables", "iptables"),
                          ("iptables-restore", "iptables")):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` not found: apt-get install {package}")
    if shutil.which("iptables"):
        version = subprocess.run(["iptables", "--version"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout
        if "nf_tables" not in version:
            problems.append(f"iptables must use the nf_tables backend, not: {version.strip()} "
                            "(update-alternatives --set iptables /usr/sbin/iptables-nft)")
    if problems:
        raise HarnessUnavailable("network tests cannot run here: " + "; ".join(problems))


def _run(*args: str, check: bool = True, input: str | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, input=input,
                          check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _ns_names(index: int) -> list[str]:
    return [f"{NS_PREFIX}{kind}{index}" for kind in "hrs"]


def _link_name(index: int) -> str:
    return f"{LINK_PREFIX}{index}"


def list_namespaces() -> list[str]:
    """This harness's namespaces that exist now (of any run)."""
    names = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]
    return [name for name in names if re.fullmatch(rf"{NS_PREFIX}[hrs]\d+", name)]


def list_links() -> list[str]:
    """This harness's root-namespace interfaces that exist now (of any run)."""
    names = [line.split()[0].split("@")[0] for line in _run("ip", "-br", "link").splitlines()
             if line.strip()]
    return [name for name in names if re.fullmatch(rf"{LINK_PREFIX}\d+", name)]


def remove_index(index: int) -> None:
    """Everything of index N: its processes (killed by pid), its uplink, its namespaces."""
    present = set(list_namespaces())
    for ns in _ns_names(index):
        if ns in present:
            for pid in _run("ip", "netns", "pids", ns, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
    if _link_name(index) in list_links():
        # synchronous, and takes the far end with it (a namespace's own teardown is not)
        _run("ip", "link", "del", _link_name(index), check=False)
    for ns in _ns_names(index):
        if ns in present:
            _run("ip", "netns", "del", ns, check=False)


# claims: one file per index in STATE_DIR, "pid starttime" of the process that owns it


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the command name


def _claim_owner_alive(path: Path) -> bool:
    try:
        pid, started = path.read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid)) == started


class _Lock:
    def __enter__(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _sweep_locked() -> list[int]:
    removed = set()
    live = set()
    for path in STATE_DIR.glob("[0-9]*"):
        if _claim_owner_alive(path):
            live.add(int(path.name))
        else:
            remove_index(int(path.name))
            path.unlink(missing_ok=True)
            removed.add(int(path.name))
    names = list_namespaces() + list_links()
    for index in {int(re.sub(r"\D", "", name)) for name in names} - live:
        remove_index(index)
        removed.add(index)
    return sorted(removed)


def sweep() -> list[int]:
    """Remove what crashed runs left behind; the indexes cleaned."""
    with _Lock():
        return _sweep_locked()


def _claim() -> int:
    with _Lock():
        for index in INDEXES:
            path = STATE_DIR / str(index)
            if path.exists() and _claim_owner_alive(path):
                continue
            remove_index(index)  # leftovers of a dead owner (sweep ran; this is cheap)
            path.write_text(f"{os.getpid()} {_start_time(os.getpid())}")
            return index
    raise RuntimeError(f"all {len(INDEXES)} harness indexes are claimed by live runs")


def _release(index: int) -> None:
    with _Lock():
        remove_index(index)
        (STATE_DIR / str(index)).unlink(missing_ok=True)


# throughput: a paced UDP sender and a receiver that times the arrivals, as two small processes

_UDP_TOOL = r"""
import json, socket, sys, time
SIZE, OVERHEAD, WARMUP = 1200, UDP_OVERHEAD, 0.25
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

def blast(dest, bits_per_s, seconds):
    gap, payload, sent = SIZE * 8 / bits_per_s, b"x" * SIZE, 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        while sent < elapsed / gap + 1:
            try:
                sock.sendto(payload, dest)
            except OSError:
                pass
            sent += 1
        time.sleep(0.002)

def receive(hello_to=None):
    sock.settimeout(0.1)
    arrivals, deadline, last_hello = [], time.monotonic() + 20, 0.0
    while time.monotonic() < deadline:
        if hello_to and not arrivals and time.monotonic() - last_hello > 0.2:
            sock.sendto(b"hello", hello_to)
            last_hello = time.monotonic()
        try:
            data = sock.recv(65536)
        except socket.timeout:
            if arrivals and time.monotonic() - arrivals[-1][0] > 0.5:
                break
            continue
        arrivals.append((time.monotonic(), len(data)))
    steady = [a for a in arrivals if a[0] >= arrivals[0][0] + WARMUP] if arrivals else []
    span = steady[-1][0] - steady[0][0] if len(steady) > 1 else 0.0
    wire = sum(n + OVERHEAD for _, n in steady[1:])
    print(json.dumps({
        "packets": len(arrivals),
        "payload_bytes": sum(n for _, n in arrivals),
        "seconds": round(arrivals[-1][0] - arrivals[0][0], 3) if arrivals else 0.0,
        "bits_per_s": wire * 8 / span if span > 0 else 0.0,
    }), flush=True)

if mode == "send":
    blast((addr, port), float(sys.argv[4]), float(sys.argv[5]))
elif mode == "fetch":
    receive(hello_to=(addr, port))
else:
    sock.bind((addr, port))
    print(sock.getsockname()[1], flush=True)
    if mode == "recv":
        receive()
    else:  # serve: blast back at whoever says hello
        sock.settimeout(10)
        _, source = sock.recvfrom(65536)
        blast(source, float(sys.argv[4]), float(sys.argv[5]))
""".replace("UDP_OVERHEAD", str(UDP_OVERHEAD))


@dataclass(frozen=True)
class Throughput:
    """What arrived of a paced UDP stream of 1200-byte datagrams. ``bits_per_s`` is the steady
    link-layer rate (payload plus UDP/IP/Ethernet headers, as tbf counts), measured after the
    first 0.25 s (the bucket's burst) to the last arrival."""

    packets: int
    payload_bytes: int
    seconds: float
    bits_per_s: float


# processes: the server on the server address, bots in hosts


@dataclass
class NetnsServer(ServerProcess):
    """A :class:`~tests.helpers.ServerProcess` bound to the harness's server address, which
    hosts reach: its URL, invite links and ICE candidates all use that address."""

    address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.env = {**server_env(self.address, self.port), **self.env}

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.address}:{self.port}{path}"


def server_env(address: str, port: int) -> dict[str, str]:
    """Settings that make a server on ``address`` (an address of the root namespace, e.g. a
    Network's ``server_address``) usable from hosts: it binds there, links there, gathers ICE
    candidates there only, and accepts remote candidates from the harness's networks."""
    return {
        "IMPROV_HOST": address,
        "IMPROV_PUBLIC_URL": f"http://{address}:{port}",
        "IMPROV_ICE_ADDRESSES": json.dumps([address]),
        "IMPROV_ICE_ALLOWED_NETWORKS": json.dumps([HARNESS_NETWORK]),
    }


@dataclass
class NetnsBot(BotProcess):
    """A :class:`~tests.helpers.BotProcess` running inside a host's namespace."""

    host: Host | None = None

    def start(self) -> NetnsBot:
        assert self.host is not None
        self.proc = subprocess.Popen(
            self.host.command(*cli(), "bot", "--invite", self.invite_url,
                              "--duration", str(self.duration),
                              "--report", str(self.report_path), *self.extra),
            cwd=REPO,
            env={**os.environ, **self.host.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self


# hosts


@dataclass
class Host:
    """A performer's machine behind its access router; made by :meth:`Network.add`."""

    network: Network
    index: int
    nat: bool
    loss_up: float
    loss_down: float
    rate_up: int | None
    rate_down: int | None
    block_udp: bool
    burst: int | None = None
    latency: float = 0.05
    #: with ``block_udp``: the one (address, port) UDP still reaches, e.g. a TURN server's
    udp_allowed_to: tuple[str, int] | None = None
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)
    #: between :meth:`link_down` and :meth:`link_up`
    outage_active: bool = False

    @property
    def name(self) -> str:
        """The performer's namespace (for ``ip netns exec``)."""
        return f"{NS_PREFIX}h{self.index}"

    @property
    def router(self) -> str:
        """The router's namespace (its iptables rules and qdiscs live there)."""
        return f"{NS_PREFIX}r{self.index}"

    @property
    def uplink(self) -> str:
        """The root side of the router's uplink (an interface of the root namespace)."""
        return _link_name(self.index)

    @property
    def gateway(self) -> str:
        """The root namespace's address on this host's uplink."""
        return f"198.18.{self.index}.1"

    @property
    def router_address(self) -> str:
        """The router's uplink address: what the server sees of a NAT host."""
        return f"198.18.{self.index}.2"

    @property
    def address(self) -> str:
        """The performer's own address (private behind NAT)."""
        return f"{NAT_LAN}.2" if self.nat else f"198.19.{self.index}.2"

    @property
    def public_address(self) -> str:
        """Where the server sees this performer's packets come from."""
        return self.router_address if self.nat else self.address

    def env(self) -> dict[str, str]:
        """Environment of improv-capture processes in this host: gather ICE candidates on the
        host's own address, accept the harness's addresses as remote candidates."""
        return {
            "IMPROV_ICE_ADDRESSES": json.dumps([self.address]),
            "IMPROV_ICE_ALLOWED_NETWORKS": json.dumps([HARNESS_NETWORK]),
        }

    def command(self, *args: str) -> list[str]:
        """``args`` as a command that runs in this host."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, timeout: float = 60, check: bool = False,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command in this host to its end (output captured as text)."""
        kw.setdefault("cwd", REPO)
        return subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=timeout, check=check, **kw)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start a command in this host (own session); killed when the network closes."""
        kw.setdefault("cwd", REPO)
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(*args), **kw)
        self._processes.append(proc)
        return proc

    def bot(self, invite_url: str, duration: float, *extra: str,
            report_path: Path | None = None) -> NetnsBot:
        """Start ``improv-capture bot`` in this host (its report in the network's workdir)."""
        path = report_path or self.network.workdir / f"bot-{self.index}-{len(self._processes)}.json"
        bot = NetnsBot(invite_url, duration, path, extra, host=self).start()
        assert bot.proc is not None
        self._processes.append(bot.proc)
        return bot

    def chromium_wrapper(self, directory: Path) -> Path:
        """An executable that runs /usr/bin/chromium in this host, for Playwright's
        ``executable_path``."""
        path = directory / f"chromium-{self.name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} /usr/bin/chromium "$@"\n')
        path.chmod(0o755)
        return path

    def dropped(self) -> dict[str, int]:
        """Packets the router's loss rules dropped so far, per direction ("up", "down")."""
        listing = _run("ip", "netns", "exec", self.router, "iptables", "-t", "filter",
                       "-L", "FORWARD", "-n", "-v", "-x")
        counts = {"up": 0, "down": 0}
        for line in listing.splitlines():
            found = re.search(rf"/\* {COMMENT}-loss-(up|down) \*/", line)
            if found:
                counts[found.group(1)] += int(line.split()[0])
        return counts

    def link_down(self) -> None:
        """An outage: the router drops everything it would forward, both ways, silently (a
        cable pulled at the home router: nothing is refused, packets just vanish, so TCP
        retransmits and ICE consent checks go unanswered). :meth:`link_up` ends it."""
        if not self.outage_active:
            _run("ip", "netns", "exec", self.router, "iptables", "-I", "FORWARD", "1",
                 "-m", "comment", "--comment", f"{COMMENT}-outage", "-j", "DROP")
            self.outage_active = True

    def link_up(self) -> None:
        """End an outage of :meth:`link_down`: forwarding resumes with every other rule as
        it was."""
        if self.outage_active:
            _run("ip", "netns", "exec", self.router, "iptables", "-D", "FORWARD",
                 "-m", "comment", "--comment", f"{COMMENT}-outage", "-j", "DROP")
            self.outage_active = False

    def measure(self, direction: str, bits_per_s: float, seconds: float = 2.0) -> Throughput:
        """Send a paced UDP stream of ``bits_per_s`` (payload) for ``seconds`` between this
        host and the root namespace ("up": from the host, "down": to it) and return what
        arrived. Bounded: the sender stops after ``seconds``, the receiver 0.5 s after the
        last datagram (20 s at most)."""
        python = sys.executable
        rate, length = str(bits_per_s), str(seconds)
        if direction == "up":
            receiver = subprocess.Popen([python, "-c", _UDP_TOOL, "recv", self.gateway, "0"],
                                        stdout=subprocess.PIPE, text=True)
            try:
                assert receiver.stdout is not None
                port = receiver.stdout.readline().strip()
                self.run(python, "-c", _UDP_TOOL, "send", self.gateway, port, rate, length,
                         timeout=seconds + 10, check=True)
                out, _ = receiver.communicate(timeout=25)
            finally:
                receiver.kill()
                receiver.wait()
            report = out
        elif direction == "down":
            sender = subprocess.Popen(
                [python, "-c", _UDP_TOOL, "serve", self.gateway, "0", rate, length],
                stdout=subprocess.PIPE, text=True)
            try:
                assert sender.stdout is not None
                port = sender.stdout.readline().strip()
                report = self.run(python, "-c", _UDP_TOOL, "fetch", self.gateway, port,
                                  timeout=25, check=True).stdout
                sender.wait(timeout=seconds + 10)
            finally:
                sender.kill()
                sender.wait()
        else:
            raise ValueError(f"direction is 'up' or 'down', not {direction!r}")
        return Throughput(**json.loads(report))

    def _stop_processes(self) -> None:
        for proc in self._processes:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)


def _tbf(device: str, rate: int, burst: int | None, latency: float) -> list[str]:
    burst = burst or max(16 * 1024, rate // 8 // 50)  # 20 ms of the rate, 16 KiB at least
    return ["tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", f"{rate}bit",
            "burst", str(burst), "latency", f"{int(latency * 1000)}ms"]


class Network:
    """The server address and the hosts of one test; :meth:`close` removes everything
    (the ``hosts`` fixture calls it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hosts: list[Host] = []
        self.servers: list[NetnsServer] = []
        self._indexes: list[int] = []
        self._server_index: int | None = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Network:
        check_tools()
        self.workdir.mkdir(parents=True, exist_ok=True)
        sweep()
        index = self._server_index = self._claim()
        try:
            ns, link = f"{NS_PREFIX}s{index}", _link_name(index)
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _disable_ipv6(link)
            _run("ip", "addr", "add", f"198.18.{index}.1/30", "dev", link)
            _run("ip", "-n", ns, "addr", "add", f"198.18.{index}.2/30", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "link", "set", link, "up")
        except BaseException:
            self.close()
            raise
        return self

    @property
    def server_address(self) -> str:
        """The root namespace's address for servers: every host reaches it."""
        assert self._server_index is not None, "the network is not open"
        return f"198.18.{self._server_index}.1"

    def server(self, data_dir: Path | None = None, env: dict[str, str] | None = None,
               timeout: float = 60.0) -> NetnsServer:
        """Start a server on the server address; stopped when the network closes."""
        server = NetnsServer(data_dir or self.workdir / f"data-{len(self.servers)}",
                             env=env or {}, address=self.server_address)
        self.servers.append(server)
        return server.start(timeout=timeout)

    def add(self, *, nat: bool = False, loss: float = 0.0, loss_up: float | None = None,
            loss_down: float | None = None, rate_up: int | None = None,
            rate_down: int | None = None, burst: int | None = None, latency: float = 0.05,
            block_udp: bool = False, udp_allowed_to: tuple[str, int] | None = None) -> Host:
        """A new performer host. ``nat``: behind a MASQUERADE home router. ``loss``: random
        drop probability both ways (``loss_up``/``loss_down`` per direction, up = towards the
        server). ``rate_up``/``rate_down``: tbf caps in bit/s (``burst`` bytes, default 20 ms
        of the rate and 16 KiB at least; ``latency`` s of queue). ``block_udp``: the router
        drops all UDP both ways (TCP still passes), except to and from ``udp_allowed_to``
        (address, port), e.g. a TURN server's: a firewall that lets UDP out only to it."""
        if udp_allowed_to is not None and not block_udp:
            raise ValueError("udp_allowed_to is an exception to block_udp")
        index = self._claim()
        host = Host(self, index, nat, loss if loss_up is None else loss_up,
                    loss if loss_down is None else loss_down, rate_up, rate_down, block_udp,
                    burst, latency, udp_allowed_to)
        self.hosts.append(host)
        try:
            self._build(host)
        except BaseException:
            self._indexes.remove(index)
            _release(index)
            self.hosts.remove(host)
            raise
        return host

    def _build(self, host: Host) -> None:
        n, h, r, link = host.index, host.name, host.router, host.uplink
        lan = f"{NAT_LAN}" if host.nat else f"198.19.{n}"
        for ns in (h, r):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        # no ICMP rate limit: the router rejects every packet to an address beyond the harness
        # at once (below), so that a host's DNS lookups and STUN queries fail fast
        _run("ip", "netns", "exec", r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
             "net.ipv4.icmp_ratelimit=0", *_IPV6_OFF)
        _run("ip", "netns", "exec", h, "sysctl", "-q", "-w", *_IPV6_OFF)
        _run("ip", "link", "add", link, "type", "veth", "peer", "name", "wan0", "netns", r)
        _disable_ipv6(link)
        _run("ip", "-n", r, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
             "netns", h)
        _run("ip", "addr", "add", f"{host.gateway}/30", "dev", link)
        _run("ip", "link", "set", link, "up")
        _run("ip", "-n", r, "addr", "add", f"{host.router_address}/30", "dev", "wan0")
        _run("ip", "-n", r, "addr", "add", f"{lan}.1/24", "dev", "lan0")
        _run("ip", "-n", r, "link", "set", "wan0", "up")
        _run("ip", "-n", r, "link", "set", "lan0", "up")
        _run("ip", "-n", h, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run("ip", "-n", h, "link", "set", "eth0", "up")
        _run("ip", "-n", h, "route", "add", "default", "via", f"{lan}.1")
        _run("ip", "-n", r, "route", "add", "default", "via", host.gateway)
        if not host.nat:
            _run("ip", "route", "add", f"198.19.{n}.0/24", "via", host.router_address,
                 "dev", link)
        # nothing leaves the machine: the router forwards only to the harness's networks (the
        # root namespace does not forward at all); the rest is answered "network unreachable"
        rules = [(f"-A FORWARD -i lan0 ! -d {HARNESS_NETWORK} "
                  f"-m comment --comment {COMMENT}-contain "
                  "-j REJECT --reject-with icmp-net-unreachable")]
        for direction, into, out, probability in (("up", "lan0", "wan0", host.loss_up),
                                                  ("down", "wan0", "lan0", host.loss_down)):
            if host.block_udp and host.udp_allowed_to is not None:
                # two DROPs, no ACCEPT: the loss rules below still see the allowed UDP
                address, port = host.udp_allowed_to
                peer, peer_port = ("-d", "--dport") if direction == "up" else ("-s", "--sport")
                rules += [(f"-A FORWARD -i {into} -o {out} -p udp ! {peer} {address} "
                           f"-m comment --comment {COMMENT}-block-udp -j DROP"),
                          (f"-A FORWARD -i {into} -o {out} -p udp {peer} {address} "
                           f"! {peer_port} {port} -m comment --comment {COMMENT}-block-udp "
                           "-j DROP")]
            elif host.block_udp:
                rules.append(f"-A FORWARD -i {into} -o {out} -p udp "
                             f"-m comment --comment {COMMENT}-block-udp -j DROP")
            if probability > 0:
                rules.append(f"-A FORWARD -i {into} -o {out} -m statistic --mode random "
                             f"--probability {probability} "
                             f"-m comment --comment {COMMENT}-loss-{direction} -j DROP")
        tables = ["*filter", ":FORWARD ACCEPT [0:0]", *rules, "COMMIT"]
        if host.nat:
            tables += ["*nat", ":POSTROUTING ACCEPT [0:0]",
                       f"-A POSTROUTING -o wan0 -m comment --comment {COMMENT}-nat -j MASQUERADE",
                       "COMMIT"]
        _run("ip", "netns", "exec", r, "iptables-restore", input="\n".join(tables) + "\n")
        for device, rate in (("wan0", host.rate_up), ("lan0", host.rate_down)):
            if rate:
                _run("ip", "netns", "exec", r, *_tbf(device, rate, host.burst, host.latency))

    def _claim(self) -> int:
        index = _claim()
        self._indexes.append(index)
        return index

    def names(self) -> tuple[list[str], list[str]]:
        """The namespaces and root links this network has (or had)."""
        namespaces = [f"{NS_PREFIX}s{self._server_index}"] if self._server_index else []
        for host in self.hosts:
            namespaces += [host.name, host.router]
        return namespaces, [_link_name(i) for i in self._indexes]

    def close(self) -> None:
        """Stop servers and every process started in a host, then remove all of it."""
        errors = []
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning
                errors.append(exc)
        for host in self.hosts:
            try:
                host._stop_processes()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        for index in list(self._indexes):
            try:
                _release(index)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]


_IPV6_OFF = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")


def _disable_ipv6(link: str) -> None:
    """No IPv6 link-local chatter on a root-side link (no-op without IPv6)."""
    path = Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6")
    if path.exists():
        path.write_text("1")


@contextmanager
def opened(workdir: Path) -> Iterator[Network]:
    """A :class:`Network` in ``workdir``, open, closed at the end whatever happens; a machine
    that cannot make namespaces fails the test and says why."""
    network = Network(workdir)
    try:
        network.open()
    except HarnessUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield network
    finally:
        network.close()


@pytest.fixture(name="hosts")
def hosts_fixture(tmp_path: Path) -> Iterator[Network]:
    """A :class:`Network` for the test: ``hosts.add(...)`` makes performer hosts,
    ``hosts.server()`` starts a server they reach; all removed at the end, pass or fail."""
    with opened(tmp_path / "netns") as network:
        yield network


@pytest.fixture(name="network", scope="module")
def module_network_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """One :class:`Network` for a whole module: its hosts and server live until its last test."""
    with opened(tmp_path_factory.mktemp("netns")) as network:
        yield network


@pytest.fixture(name="shared_server", scope="module")
def shared_server_fixture(network: Network) -> NetnsServer:
    """One server on the module's network."""
    return network.server()

