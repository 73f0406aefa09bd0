from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BotProcess, ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ServerProcess]:
    """A router and two worker processes (`serve --workers 2`)."""
    proc = ServerProcess(tmp_path / "data", env={"IMPROV_WORKERS": "2"}).start(timeout=60)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def bots(tmp_path: Path) -> Iterator[Any]:
    """Start ``improv-capture bot`` processes; all are killed at the end of the test."""
    started: list[BotProcess] = []

    def start(invite_url: str, duration: float, *extra: str) -> BotProcess:
        bot = BotProcess(invite_url, duration, tmp_path / f"bot-{len(started)}.json", extra).start()
        started.append(bot)
        return bot

    try:
        yield start
    finally:
        for bot in started:
            bot.stop()
