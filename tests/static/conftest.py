"""Headless Debian Chromium driven by Playwright, with fake camera and microphone."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.static.pages import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
def browser_required() -> bool:
    return os.environ.get("IMPROV_REQUIRE_BROWSER") == "1"


@pytest.fixture
def browser(browser_required: bool) -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        if browser_required:
            pytest.fail(f"{CHROMIUM} is missing and browser tests are required")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
