"""Fixtures every test may use, and the rule that every test declares its tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BotProcess, ServerProcess

#: The test tiers (markers declared in pyproject.toml): each test has exactly one, most often
#: as ``pytestmark = pytest.mark.<tier>`` at the top of its module, so that
#: ``scripts/test -m unit`` runs the fast ones alone.
TIERS = ("unit", "process", "browser", "network")


@pytest.hookimpl(tryfirst=True)  # before -m deselects: a test without a tier fails every run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"  {item.nodeid}: {', '.join(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(
            f"every test needs exactly one tier marker of {', '.join(TIERS)} "
            "(pytestmark = pytest.mark.<tier> in its module):\n" + "\n".join(wrong)
        )


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
