"""Real bots (separate processes, real aiortc peers over loopback) in real rooms."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers import (
    BotFactory,
    ServerProcess,
    next_of,
    operator_ws,
    publishing,
    room_state,
    wait_for,
)

pytestmark = pytest.mark.process



def assert_received_everyone(report: dict[str, Any], others: list[str], seconds: float) -> None:
    received = report["received"]
    assert sorted(received) == sorted(others), report
    for pid in others:
        stats = received[pid]
        assert stats["fps"] >= 25, (pid, stats)
        # audio is 50 packets/s; allow for the connection set-up at the start
        assert stats["audio_frames"] >= 50 * (seconds - 3), (pid, stats)
        assert stats["latency_ms_p50"] is not None and stats["latency_ms_p50"] < 250, stats


def test_three_bots_see_and_hear_each_other_and_no_invite_token_is_logged(
    server: ServerProcess, bots: BotFactory
) -> None:
    """Every performer gets every other's media (a pair: test_leave_and_rejoin_with_the_same_invite);
    the server logs their joining and never their invite tokens."""
    seconds, count = 6, 3
    room = server.create_room()
    invites = [server.invite(room, f"bot {i}") for i in range(count)]
    running = [bots(inv["url"], seconds) for inv in invites]
    results = [bot.wait() for bot in running]
    ids = [inv["performer_id"] for inv in invites]
    for (status, output, report), me in zip(results, ids):
        assert status == 0, output
        assert report["performer_id"] == me
        assert report["sent"]["video_frames"] >= 28 * seconds
        assert_received_everyone(report, [pid for pid in ids if pid != me], seconds)
    log = server.log()
    assert "joined room" in log
    for invite in invites:
        assert invite["token"] not in log
        assert invite["token"].split(".")[1] not in log


def test_leave_and_rejoin_with_the_same_invite(server: ServerProcess, bots: BotFactory) -> None:
    room = server.create_room()
    stay, come_back = server.invite(room, "stays"), server.invite(room, "comes back")
    anchor = bots(stay["url"], 30)
    wait_for(lambda: publishing(server, room, 1), 20, "the performer who stays")
    status, output, first = bots(come_back["url"], 4).wait()
    assert status == 0, output
    assert_received_everyone(first, [stay["performer_id"]], 4)
    room_state = server.api("GET", f"/api/v1/rooms/{room}").json()
    assert [p["performer_id"] for p in room_state["performers"]] == [stay["performer_id"]]
    status, output, second = bots(come_back["url"], 4).wait()
    assert status == 0, output
    assert_received_everyone(second, [stay["performer_id"]], 4)
    status, output, report = anchor.finish()
    assert status == 0, output
    # the anchor saw the returning performer both times: two stretches of video
    seen = report["received"][come_back["performer_id"]]
    assert seen["video_frames"] >= 25 * (4 + 4 - 4), seen


def test_fifth_performer_is_refused_and_the_room_goes_on(
    server: ServerProcess, bots: BotFactory
) -> None:
    room = server.create_room()
    invites = [server.invite(room, f"p{i}") for i in range(5)]
    running = [bots(inv["url"], 30) for inv in invites[:4]]
    wait_for(lambda: len(room_state(server, room)["performers"]) == 4, 20, "four performers")
    status, output, _ = bots(invites[4]["url"], 3).wait()
    assert status == 1
    assert "4429" in output and "room is full" in output
    wait_for(lambda: publishing(server, room, 4), 20, "all four publishing")
    time.sleep(3)  # three seconds of everyone's media after the refusal
    for bot in running:
        code, out, report = bot.finish()
        assert code == 0, out
        assert len(report["received"]) == 3
        assert all(r["fps"] >= 20 for r in report["received"].values()), report


async def test_console_sees_rooms_stats_and_flags(server: ServerProcess, bots: BotFactory) -> None:
    room = server.create_room("live")
    ws = await operator_ws(server, server.token)
    try:
        await next_of(ws, "welcome")
        rooms = await next_of(ws, "rooms")
        assert [r["room_id"] for r in rooms["rooms"]] == [room]
        invites = [server.invite(room, n) for n in ("Ann", "Ben")]
        listed = server.api("GET", f"/api/v1/rooms/{room}/invites").json()["items"]
        assert [i["token"] for i in listed] == [i["token"] for i in invites]
        running = [bots(inv["url"], 20) for inv in invites]
        deadline = time.time() + 15
        stats: dict[str, Any] = {}
        while time.time() < deadline:
            message = await next_of(ws, "stats")
            stats = message["performers"]
            if len(stats) == 2 and all(
                (s["video"] or {}).get("fps", 0) >= 25
                and (s["audio"] or {}).get("level_dbov") is not None
                and s["rtt_ms"] is not None  # needs a report round trip: a second or two
                for s in stats.values()
            ):
                break
        assert len(stats) == 2, stats
        for performer in stats.values():
            assert performer["video"]["width"] == 640 and performer["video"]["bitrate_kbps"] > 50
            assert performer["audio"]["level_dbov"] is not None, stats
            assert performer["rtt_ms"] is not None
            assert "frozen" not in performer["flags"] and "lossy" not in performer["flags"]
        for bot in running:  # seen enough: they leave now
            assert bot.finish()[0] == 0
    finally:
        await ws.close()
