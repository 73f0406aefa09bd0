"""Headless Debian Chromium driven by Playwright, with fake camera and microphone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.static.pages import CHROMIUM_ARGS, chromium


@pytest.fixture(scope="session")
def browser_required() -> bool:
    return os.environ.get("IMPROV_REQUIRE_BROWSER") == "1"


@pytest.fixture
def browser(browser_required: bool) -> Iterator[Any]:
    with chromium(CHROMIUM_ARGS, browser_required) as instance:
        yield instance
