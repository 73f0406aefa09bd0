"""What the benchmark scripts share: a server process on loopback with its data dir, and
/proc readings of it. Import from a script in this folder (`from benchlib import ...`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from improv_capture.cluster.workers import free_loopback_port as free_port

#: every benchmark peer gathers ICE candidates on loopback only (and the server may send
#: ICE checks to loopback candidates)
LOOPBACK = {"IMPROV_ICE_ADDRESSES": '["127.0.0.1"]', "IMPROV_ICE_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
TICKS = os.sysconf("SC_CLK_TCK")


class Server:
    """`improv-capture serve` in its own process (or, with IMPROV_WORKERS, a router and its
    workers), so that /proc measures the server alone."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.bots: list[subprocess.Popen[bytes]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "improv_capture.cli", "serve", "--port", str(self.port),
             "--data-dir", str(data_dir)],
            cwd=ROOT, env={**os.environ, **LOOPBACK, "IMPROV_LOG_LEVEL": "warning", **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        token = (data_dir / "operator_token").read_text().strip()
        self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                timeout=120)

    def bot(self, invite_url: str, duration: float, *extra: str) -> subprocess.Popen[bytes]:
        """A bot process; `stop` kills it if it is still running."""
        bot = subprocess.Popen(
            [sys.executable, "-m", "improv_capture.cli", "bot", "--invite", invite_url,
             "--duration", str(duration), *extra],
            cwd=ROOT, env={**os.environ, **LOOPBACK},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.bots.append(bot)
        return bot

    def pids(self) -> list[int]:
        """The server and every process it started (a cluster's workers), not the bots."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    todo += [int(c) for c in children.read_text().split()]
                except OSError:
                    pass
        return found

    def cpu_by_process(self) -> dict[int, float]:
        """CPU seconds (user + system) of each server process."""
        seconds = {}
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        return seconds

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_process().values())

    def rss_mb(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += next((int(l.split()[1]) / 1024 for l in lines if l.startswith("VmRSS:")), 0.0)
        return total

    def stop(self) -> None:
        """Kill the bots still running, stop the server, remove its data dir."""
        for bot in self.bots:
            if bot.poll() is None:
                bot.kill()
        self.api.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
