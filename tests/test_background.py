"""improv_capture.background: tasks nothing awaits are kept until done and cancelled together."""

from __future__ import annotations

import asyncio
import gc

import pytest

from improv_capture.background import Background

pytestmark = pytest.mark.unit


async def test_a_spawned_task_runs_to_its_end_unreferenced_and_stop_cancels_the_rest() -> None:
    background = Background()
    done: list[str] = []
    release = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0.01)
        gc.collect()  # nothing but the Background holds the task
        done.append("quick")

    async def waits() -> None:
        try:
            await release.wait()
            done.append("released")
        except asyncio.CancelledError:
            done.append("cancelled")
            raise

    background.spawn(quick())
    background.spawn(waits())
    await asyncio.sleep(0.1)
    assert done == ["quick"]
    await background.cancel()
    assert done == ["quick", "cancelled"]
    await background.cancel()  # nothing left: a second stop is a no-op
    assert done == ["quick", "cancelled"]
