"""Fixtures every test may use, and the rule that every test declares its tier."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BotProcess, ServerProcess

#: The test tiers (markers declared in pyproject.toml): each test has exactly one, most often
#: as ``pytestmark = pytest.mark.<tier>`` at the top of its module, so that
#: ``scripts/test -m unit`` runs the fast ones alone.
TIERS = ("unit", "process", "browser", "network")


#: scripts/test runs two pytest-xdist workers (`--dist loadgroup`). Every test that sends
#: real-time media (bots, Chromium, performer hosts) is in MEDIA_GROUP: one worker runs them one
#: at a time, since they are judged against the wall clock (A/V offsets, frames per second) and
#: two at once on two cores would starve each other's encoders. The other worker runs the rest
#: (unit tests, servers answering requests) beside them, a module at a time (module fixtures
#: start once). Media tests run in MEDIA_ORDER of their tiers: the bots first, while the other
#: worker is still busy; the browsers and performer hosts, whose timings are the finest, after.
#: A module whose bots all send ``--preencoded`` media (next to no CPU) and whose checks are not
#: timed has its own group instead (tests.helpers.PREENCODED_BOTS) and runs on the other worker.
MEDIA_GROUP = "media"
MEDIA_ORDER = ("process", "network", "browser")


def tier_of(item: pytest.Item) -> str | None:
    tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
    return tiers.pop() if len(tiers) == 1 else None


def module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def sends_media(item: pytest.Item) -> bool:
    return tier_of(item) in ("browser", "network") or "bots" in getattr(item, "fixturenames", ())


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
    tiers_of: dict[str, set[str | None]] = {}
    for item in items:
        tiers_of.setdefault(module_of(item), set()).add(tier_of(item))
    own_group = {module_of(item) for item in items if item.get_closest_marker("xdist_group")}
    media = {module_of(item) for item in items if sends_media(item)} - own_group
    for item in items:
        module = module_of(item)
        if module not in own_group:
            item.add_marker(pytest.mark.xdist_group(MEDIA_GROUP if module in media else module))
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        for item in items:
            (group,) = {str(m.args[0]) for m in item.iter_markers("xdist_group")}
            # pytest-xdist 3.8 tells the scheduler a test's group by suffixing the nodeid with
            # `@group` through `item._nodeid`, which pytest 9 no longer reads (a node's id is
            # `_id`): without this every test is scheduled on its own, media tests included
            item._id = f"{item.nodeid}@{group}"  # type: ignore[attr-defined]

    def rank(item: pytest.Item) -> int:
        """The media group first (xdist gives each worker the first unit it finds: the media
        worker must not start late), in MEDIA_ORDER; then the modules with a group of their
        own (PREENCODED_BOTS), then the rest."""
        module = module_of(item)
        if module in media:
            return max(MEDIA_ORDER.index(t) for t in tiers_of[module] if t in MEDIA_ORDER)
        return len(MEDIA_ORDER) + (module not in own_group)

    items.sort(key=rank)  # stable: modules and tests keep their order within a rank


#: beside the media group, the other worker's tests (and the servers they start) yield the CPU:
#: they are judged by their answers, the media tests by the wall clock. Root only (scripts/test
#: is run as root): a process may not lower its niceness back otherwise. 19: at 10 (a tenth of
#: a media process's share each) the media tests still missed their timings on 2 cores.
NICE_BESIDE_MEDIA = 19


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not getattr(item.config.option, "loadgroup", False) or os.geteuid() != 0:
        return
    groups = {str(m.args[0]) for m in item.iter_markers("xdist_group")}
    os.setpriority(os.PRIO_PROCESS, 0, 0 if groups == {MEDIA_GROUP} else NICE_BESIDE_MEDIA)


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
