"""The network-namespace harness itself (tests/netns.py): two bots meet in a room, one of them
behind a lossy, rate-capped home router; everything is gone afterwards, and what a crashed run
left behind is swept."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import room_state, wait_for
from tests.netns import (
    STATE_DIR,
    NetnsServer,
    Network,
    list_links,
    list_namespaces,
    sweep,
)

pytestmark = pytest.mark.network

CAP = 2_000_000  # bit/s
#: the server's ICE log (aioice, info level): the remote address of each pair that succeeded
SUCCEEDED_PAIR = re.compile(
    r"CandidatePair\(\('[\d.]+', \d+\) -> \('([\d.]+)', \d+\)\) State\.IN_PROGRESS -> "
    r"State\.SUCCEEDED"
)
#: uvicorn's access log: the client address of each signaling socket
SIGNALING_CLIENT = re.compile(r"([\d.]+):\d+ - \"WebSocket /api/v1/signal")


def forwarded_both_ways(server: NetnsServer, room: str, audio: int, video: int) -> bool:
    """Both performers are in the room and the server has sent each of them at least
    ``audio`` and ``video`` packets of the other's (handed to the subscription's sender, which
    pulls only once its connection is up: packets in, less those dropped and still queued)."""
    members = room_state(server, room)["performers"]
    least = {"audio": audio, "video": video}
    return len(members) == 2 and all(
        len(member["receiving"]) == 1
        and all(
            set(tracks) == set(least)
            and all(t["packets"] - t["dropped"] - t["queued"] >= least[kind]
                    for kind, t in tracks.items())
            for tracks in member["receiving"].values()
        )
        for member in members
    )


def test_two_bots_meet_through_nat_loss_and_a_rate_cap(tmp_path: Path) -> None:
    with Network(tmp_path / "netns") as network:
        home = network.add(nat=True, loss=0.05, rate_up=CAP)
        plain = network.add()
        namespaces, links = network.names()
        assert set(namespaces) <= set(list_namespaces()) and set(links) <= set(list_links())

        # the cap holds: a paced stream at twice the cap arrives at the cap (+-25 %); measured
        # while the server starts, before any media shares the link
        with ThreadPoolExecutor(1) as pool:
            measuring = pool.submit(home.measure, "up", bits_per_s=2 * CAP, seconds=1.5)
            server = network.server()
            upload = measuring.result(timeout=30)
        assert 0.75 * CAP <= upload.bits_per_s <= 1.25 * CAP, upload
        # the home LAN is private: the root namespace has no route to it through the harness
        route = subprocess.run(["ip", "route", "get", home.address], capture_output=True,
                               text=True, timeout=10, check=True).stdout
        assert not any(link in route.split() for link in list_links()), route

        room = server.create_room()
        invites = [server.invite(room, name) for name in ("home", "plain")]
        bots = [home.bot(invites[0]["url"], 30), plain.bot(invites[1]["url"], 30)]
        # 2.5 s of media each way (50 audio packets/s; video: 30 fps, a packet or more a
        # frame), however long a busy machine takes to connect and send them
        wait_for(lambda: forwarded_both_ways(server, room, audio=125, video=75), 40,
                 "2.5 s of media forwarded both ways")
        results = [bot.finish() for bot in bots]
        for (status, output, report), me, other in zip(results, invites, invites[::-1]):
            assert status == 0, output
            assert report["performer_id"] == me["performer_id"]
            stats = report["received"][other["performer_id"]]
            # each saw and heard the other: 40 % of what was sent at least (5 % loss, packets
            # in flight at the end; lost video stalls the picture until a retransmission or a
            # keyframe)
            assert stats["video_frames"] >= 15 and stats["audio_frames"] >= 50, (me, stats)

        # the loss happened, both ways, on the home router
        dropped = home.dropped()
        assert dropped["up"] > 0 and dropped["down"] > 0, dropped
        # the server saw the home router's address (signaling and media), never the private one
        log = server.log()
        assert set(SIGNALING_CLIENT.findall(log)) == {home.public_address, plain.address}, log
        assert set(SUCCEEDED_PAIR.findall(log)) == {home.public_address, plain.address}, log
        assert home.public_address == home.router_address != home.address
        assert home.address not in log

    assert not set(namespaces) & set(list_namespaces()), list_namespaces()
    assert not set(links) & set(list_links()), list_links()


def test_sweep_removes_what_a_crashed_run_left(hosts: Network) -> None:
    """A run killed mid-test leaves namespaces, links and claims behind; the next run's sweep
    removes them, and leaves a live run's alone."""
    live = hosts.add()
    crashed = subprocess.Popen(["true"])
    crashed.wait()  # a pid that is no longer alive: the owner of the stale claim
    in_use = {int(re.sub(r"\D", "", n)) for n in list_namespaces() + list_links()}
    free = [i for i in range(254, 1, -1) if i not in in_use and not (STATE_DIR / str(i)).exists()]
    stale, orphan = free[:2]
    (STATE_DIR / str(stale)).write_text(f"{crashed.pid} 0")
    for command in (["ip", "netns", "add", f"improvnet-h{stale}"],
                    ["ip", "link", "add", f"imnet{stale}", "type", "veth", "peer", "name",
                     "eth0", "netns", f"improvnet-h{stale}"],
                    ["ip", "netns", "add", f"improvnet-r{orphan}"]):  # not even a claim
        subprocess.run(command, check=True, timeout=10)

    assert {stale, orphan} <= set(sweep())
    assert not {f"improvnet-h{stale}", f"improvnet-r{orphan}"} & set(list_namespaces())
    assert f"imnet{stale}" not in list_links()
    assert not (STATE_DIR / str(stale)).exists()
    assert {live.name, live.router} <= set(list_namespaces()) and live.uplink in list_links()
