"""Start and stop real server and bot processes for tests; everything started is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from improv_capture.cluster.workers import free_loopback_port as free_port

REPO = Path(__file__).resolve().parent.parent
#: Every test peer gathers ICE candidates on loopback only, and the server may send ICE
#: checks to loopback candidates (by default only to global unicast addresses).
LOOPBACK_ENV = {
    "IMPROV_ICE_ADDRESSES": '["127.0.0.1"]',
    "IMPROV_ICE_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
}


def cli() -> list[str]:
    return [sys.executable, "-m", "improv_capture.cli"]


@dataclass
class ServerProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    preexec: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "operator_token").read_text().strip()

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cli() + ["serve", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            cwd=REPO,
            env={**os.environ, **LOOPBACK_ENV, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self.preexec,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {token or self.token}")
        kw.setdefault("timeout", 10)
        return httpx.request(method, f"{self.url}{path}", headers=headers, **kw)

    def session_dir(self, session_id: str) -> Path:
        return self.data_dir / "sessions" / session_id

    def create_room(self, name: str = "test room") -> str:
        response = self.api("POST", "/api/v1/rooms", json={"name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["room_id"])

    def invite(self, room_id: str, name: str, **extra: Any) -> dict[str, Any]:
        response = self.api(
            "POST", f"/api/v1/rooms/{room_id}/invites", json={"display_name": name, **extra}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


def start_recording(server: ServerProcess, room_id: str) -> dict[str, Any]:
    response = server.api("POST", f"/api/v1/rooms/{room_id}/recording")
    assert response.status_code == 201, response.text
    return dict(response.json())


def stop_recording(server: ServerProcess, room_id: str) -> dict[str, Any]:
    response = server.api("DELETE", f"/api/v1/rooms/{room_id}/recording", timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def verify(session_dir: Path) -> tuple[int, dict[str, Any]]:
    """Run `improv-capture verify --json` as a user would."""
    done = subprocess.run(
        cli() + ["verify", str(session_dir), "--json"], cwd=REPO, capture_output=True, timeout=120
    )
    return done.returncode, json.loads(done.stdout)


def stored_events(server: ServerProcess) -> list[dict[str, Any]]:
    """Every event the server has stored: the SSE backlog, up to where the stream goes live."""
    events = []
    with httpx.stream("GET", f"{server.url}/api/v1/events", timeout=10,
                      headers={"Authorization": f"Bearer {server.token}"}) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            elif line.startswith(": live"):
                break
    return events


def manifest(session_dir: Path) -> dict[str, Any]:
    return dict(json.loads((session_dir / "manifest.json").read_text()))


@dataclass
class BotProcess:
    invite_url: str
    duration: float
    report_path: Path
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BotProcess:
        self.proc = subprocess.Popen(
            cli() + ["bot", "--invite", self.invite_url, "--duration", str(self.duration),
                     "--report", str(self.report_path), *self.extra],
            cwd=REPO,
            env={**os.environ, **LOOPBACK_ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait(self, timeout: float | None = None) -> tuple[int, str, dict[str, Any]]:
        assert self.proc is not None
        output, _ = self.proc.communicate(timeout=timeout or self.duration + 40)
        report = json.loads(self.report_path.read_text()) if self.report_path.exists() else {}
        return self.proc.returncode, output.decode(errors="replace"), report

    def peer_stats(self) -> dict[str, Any]:
        """Wait for the bot to finish cleanly; what it received from its one other performer."""
        code, output, report = self.wait()
        assert code == 0, output
        (stats,) = report["received"].values()
        return dict(stats)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
