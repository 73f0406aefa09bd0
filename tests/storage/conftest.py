from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.storage.store import MotoStore


@pytest.fixture
def store() -> Iterator[MotoStore]:
    """A moto S3 server on loopback with an empty bucket; stopped after the test."""
    moto = MotoStore().start()
    try:
        moto.create_bucket()
        yield moto
    finally:
        moto.forget()
