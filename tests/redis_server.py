"""A real redis-server for tests: loopback, a free port, its own temporary directory.

No persistence (``--save '' --appendonly no``): a restart comes back empty, as a Redis without
persistence does in production. `restart()` keeps the port, so clients configured with the
URL reconnect to the new process by themselves. `stop()` sends SIGTERM, then SIGKILL, and is
safe to call any number of times; a failed start stops what it started.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_ping(port: int, timeout_s: float = 0.5) -> bool:
    """True if something on 127.0.0.1:port answers PING with +PONG (no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process at a time, always on the same port."""

    def __init__(self, directory: Path, port: int | None = None,
                 executable: str = "redis-server") -> None:
        found = shutil.which(executable)
        if found is None:
            raise FileNotFoundError(
                f"{executable} not found: apt-get install -y redis-server")
        self.executable = found
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = self.directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Self:
        """Starts redis-server and waits until it answers PING; stops it if it does not."""
        if self.proc is not None:
            raise RuntimeError("already running")
        self.proc = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--logfile", str(self.log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the test run does not reach it first
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not answers_ping(self.port):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                       f"{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server did not answer PING within {timeout_s} s: "
                                       f"{self.log_tail()}")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; no-op when not running."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Stops the server and starts a new, empty one on the same port."""
        self.stop()
        self.start(timeout_s)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
