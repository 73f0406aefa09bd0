"""What the welcome message hands the page: settings the operator chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import websockets

from tests.helpers import ServerProcess

pytestmark = pytest.mark.process

TURN = [{"urls": ["turn:turn.invalid:3478"], "username": "u", "credential": "secret"}]


async def test_ice_servers_and_consent_come_from_settings(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        env={
            "IMPROV_ICE_SERVERS": json.dumps(TURN),
            "IMPROV_CONSENT_VERSION": "2026-11",
            "IMPROV_CONSENT_TEXT": "We record you.",
        },
    ).start()
    try:
        room = server.create_room()
        token = server.invite(room, "Ann")["token"]
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/api/v1/signal") as ws:
            await ws.send(json.dumps({"type": "hello", "token": token}))
            welcome = json.loads(await ws.recv())
        assert welcome["ice_servers"] == TURN
        assert welcome["consent"]["version"] == "2026-11"
        assert welcome["consent"]["text"] == "We record you."
        assert welcome["media"] == {
            "width": 640, "height": 480, "frame_rate": 30, "max_video_bitrate": 1_200_000,
        }
    finally:
        server.stop()
