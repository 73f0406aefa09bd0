"""A performer in Debian's Firefox ESR, for the browser tests.

Playwright's Firefox is a patched build that cannot be installed here, so tests/firefox/performer.mjs
drives /usr/bin/firefox-esr with puppeteer-core (npm, tests/firefox/package-lock.json) over
WebDriver BiDi: it opens an invite with Firefox's fake camera and microphone, accepts the consent,
joins, and prints the page's state as JSON lines. :class:`FirefoxPerformer` runs it and keeps the
latest state; Firefox and node are killed at the end, even when the test failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.helpers import REPO

FIREFOX = "/usr/bin/firefox-esr"
DRIVER_DIR = REPO / "tests" / "firefox"
DRIVER = DRIVER_DIR / "performer.mjs"
#: Firefox starts in about 2 s here; a cold start on a loaded machine takes several times that.
LAUNCH_TIMEOUT_S = 30.0
#: How long a stop waits for the driver to close Firefox itself before killing both.
CLOSE_TIMEOUT_S = 5.0


def firefox_missing() -> str | None:
    """Why a Firefox performer cannot run here (scripts/test installs all of it), else None."""
    if not Path(FIREFOX).exists():
        return f"{FIREFOX} is not installed (Debian package firefox-esr)"
    if not shutil.which("node"):
        return "node is not installed"
    if not (DRIVER_DIR / "node_modules" / "puppeteer-core").is_dir():
        return f"puppeteer-core is not installed: npm ci --prefix {DRIVER_DIR.relative_to(REPO)}"
    return None


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Wait until ``pid`` has exited (gone, or a zombie its new parent has yet to reap)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (our own profile directory: nobody else's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


class FirefoxPerformer:
    """One performer page in headless Firefox ESR: ``start(invite_url)``, ``state()``, ``stop()``
    (also as a context manager). Firefox's profile lives in a directory of its own, removed at
    the stop; the driver's stderr (``log()``) goes to ``log_dir``, or into that directory, which
    is then kept when the ``with`` block failed."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="improv-firefox-"))
        self.profile = self.work / "profile"
        self.log_path = (log_dir or self.work) / f"firefox-{os.getpid()}-{id(self):x}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.browser_pid: int | None = None
        self.version: str | None = None
        self._latest: dict[str, Any] = {}
        self._error: str | None = None
        self._lock = threading.Lock()
        self._launched = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self, invite_url: str) -> Self:
        """Launch Firefox on the invite and join; returns once Firefox runs (not yet joined)."""
        reason = firefox_missing()
        if reason:
            raise RuntimeError(reason)
        self.profile.mkdir(parents=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["node", str(DRIVER), invite_url, "--profile", str(self.profile), "--firefox", FIREFOX],
                cwd=DRIVER_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self._reader = threading.Thread(
            target=self._read, args=(self.proc,), name="firefox-performer", daemon=True
        )
        self._reader.start()
        try:
            if not self._launched.wait(LAUNCH_TIMEOUT_S):
                raise RuntimeError(f"Firefox did not start within {LAUNCH_TIMEOUT_S} s: {self.log()}")
            if self.browser_pid is None:
                raise RuntimeError(f"the Firefox driver failed: {self._error or self.log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        """Keep the latest state line; note the launch and any error of the driver."""
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            event = line.pop("event", None)
            with self._lock:
                if event == "launched":
                    self.browser_pid = line.get("browser_pid")
                    self.version = line.get("version")
                    self._launched.set()
                elif event == "state":
                    self._latest = line
                elif event == "error":
                    self._error = str(line.get("message"))
        self._launched.set()  # the driver ended: nobody waits for a launch that never comes

    def state(self) -> dict[str, Any]:
        """What the page shows, as of the driver's last report (every 250 ms): state, status,
        error, remote tiles ``[{performer_id, width, height, time, paused, level}]``, the
        connections, what it sends, and this browser's problems (browser_support.js). Raises
        when the driver failed or ended."""
        with self._lock:
            if self._error:
                raise AssertionError(f"the Firefox performer failed: {self._error}")
            latest = dict(self._latest)
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the Firefox performer is not running: {self.log()}")
        return latest

    def wait(self, check: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> dict[str, Any]:
        """Poll :meth:`state` until ``check`` holds for it; fail after ``timeout`` s with the
        last state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state and check(state):
                return state
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; Firefox page: {state}")
            time.sleep(0.1)

    def remote(self, performer_id: str) -> dict[str, Any]:
        """The page's tile of another performer (empty without one)."""
        return next((r for r in self.state().get("remote", []) if r["performer_id"] == performer_id), {})

    def wait_playing(self, performer_id: str, timeout: float = 20) -> dict[str, Any]:
        """Wait until the page plays the other performer's 640x480 video for a second (as
        tests/static/pages.py ``wait_playing`` does for Chromium)."""
        first: dict[str, Any] = {}

        def played_a_second(_: dict[str, Any]) -> bool:
            nonlocal first
            video = self.remote(performer_id)
            if video.get("width") != 640 or not video.get("time"):
                return False
            first = first or video
            return bool(video["time"] >= first["time"] + 1.0 and not video["paused"])

        self.wait(played_a_second, timeout, f"the Firefox page to play {performer_id}'s video")
        return self.remote(performer_id)

    def stop(self) -> None:
        """Ask the driver to close Firefox (stdin closes), then kill whatever is left: node's
        process group, Firefox's (puppeteer starts it detached), and anything still using our
        profile directory. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            _kill_group(proc.pid, signal.SIGKILL)  # anything node started and left behind
        if self.browser_pid:
            _kill_group(self.browser_pid, signal.SIGKILL)
            _wait_gone(self.browser_pid)
        for pid in _pids_using(str(self.profile)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=5)
        shutil.rmtree(self.profile, ignore_errors=True)

    def log(self) -> str:
        """The driver's stderr (puppeteer and node errors)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if exc is None or self.log_path.parent != self.work:  # a failure's log is kept
            shutil.rmtree(self.work, ignore_errors=True)
