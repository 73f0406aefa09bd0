"""Three nodes (server processes with their own data dirs and ports) sharing one Redis, one
PostgreSQL and one S3-compatible store (moto), as a vendor runs them on three machines:
rooms created through any node are placed by headroom, every node answers the operator for
every room, performers go straight to the room's node, and each session ends up in the store
and the shared catalog. Redis restarted mid-session: the rooms go on, the nodes register
again and the recording is whole (docs/architecture.md, "Many machines")."""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from improv_capture.clock import parse_utc
from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    arriving,
    fetch,
    manifest,
    publishing,
    read_events,
    start_recording,
    stop_recording,
    verify,
    wait_for,
)
from tests.postgres import Postgres, postgres_fixture  # noqa: F401 - the `postgres` fixture
from tests.redis_server import RedisServer
from tests.storage.store import MotoStore
from tests.webhooks import SECRET, Receiver

pytestmark = [pytest.mark.process, PREENCODED_BOTS]

NAMES = ("node-a", "node-b", "node-c")
OPERATOR_TOKEN = secrets.token_hex(24)


class Cluster:
    def __init__(self, root: Path, postgres: Postgres) -> None:
        self.store = MotoStore().start()
        self.store.create_bucket()
        self.redis = RedisServer(root / "redis").start()
        self.receiver = Receiver(failures=0).__enter__()
        database = postgres.new_database()
        self.nodes: list[ServerProcess] = []
        for name in NAMES:
            data = root / name / "data"
            data.mkdir(parents=True)
            (data / "operator_token").write_text(OPERATOR_TOKEN)  # what ServerProcess.api sends
            self.nodes.append(ServerProcess(data, env=self.store.env(
                IMPROV_S3_KEEP_LOCAL="false", IMPROV_S3_RETRY_MIN_S="0.2",
                IMPROV_REDIS_URL=self.redis.url, IMPROV_DATABASE_URL=database,
                IMPROV_NODE_ID=name, IMPROV_OPERATOR_TOKEN=OPERATOR_TOKEN,
                IMPROV_SECRET_KEY="k" * 48, IMPROV_NODE_HEARTBEAT_S="0.3", IMPROV_NODE_TTL_S="2",
                # three nodes on one machine: each counts its own CPU, and rooms weigh in
                IMPROV_NODE_CPU="process", IMPROV_MAX_ROOMS="4",
                IMPROV_WEBHOOK_URLS=json.dumps([self.receiver.url]), IMPROV_WEBHOOK_SECRET=SECRET,
                IMPROV_WEBHOOK_BACKOFF_S="0.2", IMPROV_WEBHOOK_ALLOW_PRIVATE="true")))

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start(timeout=40)
        # registered, and done starting (a node busy with its start-up has less headroom)
        wait_for(lambda: len(self.live()) == 3 and all(n["cpu_load"] < 0.1 for n in self.infos()),
                 20, "three idle nodes registered")
        return self

    def infos(self) -> list[dict[str, Any]]:
        answer = self.nodes[0].api("GET", "/api/v1/nodes")
        return list(answer.json()["items"]) if answer.status_code == 200 else []

    def live(self) -> list[str]:
        return [n["node_id"] for n in self.infos()]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()
        self.receiver.__exit__(None, None, None)
        self.store.forget()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("nodes"), postgres)
    try:
        yield made.start()
    finally:
        made.stop()


def node_of(cluster: Cluster, url: str) -> ServerProcess:
    """The node whose public URL starts ``url`` (an invite link)."""
    return next(n for n in cluster.nodes if url.startswith(n.url + "/"))



def test_rooms_are_placed_by_headroom_and_every_node_answers_for_them(
    cluster: Cluster, bots: BotFactory, tmp_path: Path
) -> None:
    a, b, c = cluster.nodes
    # six rooms at once, two through each node: each node gets two (creates are placed one
    # after the other, across the nodes; a room weighs more than the CPU noise of an idle node)
    with ThreadPoolExecutor(6) as pool:
        rooms = list(pool.map(lambda n: cluster.nodes[n % 3].create_room(f"scene {n}"), range(6)))
    invites = [a.invite(room, "first") for room in rooms]  # made by each room's own node
    holders = [node_of(cluster, invite["url"]) for invite in invites]
    assert sorted(h.env["IMPROV_NODE_ID"] for h in holders) == sorted(list(NAMES) * 2)
    # one room on each node goes on; the others are deleted
    kept: dict[str, tuple[str, ServerProcess]] = {}
    for room, holder in zip(rooms, holders):
        kept.setdefault(holder.env["IMPROV_NODE_ID"], (room, holder))
    for room in set(rooms) - {room for room, _ in kept.values()}:
        assert a.api("DELETE", f"/api/v1/rooms/{room}").status_code == 200
    rooms = [room for room, _ in kept.values()]
    holders = [holder for _, holder in kept.values()]
    # the two rooms recorded below are on the two nodes other than A
    rooms = [rooms[holders.index(a)]] + [r for r, h in zip(rooms, holders) if h is not a]
    holders = [a] + [h for h in holders if h is not a]
    # any node lists every room
    for node in cluster.nodes:
        assert {r["room_id"] for r in node.api("GET", "/api/v1/rooms").json()["items"]} >= set(rooms)

    # two rooms record at once, on nodes B and C, driven through node A
    recorded = {}
    running = []
    performers: dict[str, list[str]] = {}
    for room, holder in zip(rooms[1:], holders[1:]):
        recorded[room] = start_recording(a, room)["session_id"]
        for name in ("Ann", "Ben"):
            invite = a.invite(room, name)
            assert invite["url"].startswith(holder.url + "/")  # signaling and media straight to the owner
            performers.setdefault(room, []).append(invite["performer_id"])
            running.append(bots(invite["url"], 30, "--preencoded"))
    for room, holder in zip(rooms[1:], holders[1:]):
        wait_for(lambda room=room: publishing(a, room, 2), 20, "both performers, seen through A")
        assert publishing(holder, room, 2)
    time.sleep(1.5)
    for bot in running:
        assert bot.finish()[0] == 0
    for room in recorded:
        assert stop_recording(a, room)["state"] == "complete"

    # both sessions in the store and the shared catalog; a reader lists them through node C and
    # fetches them through node A, verified
    token = c.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"}).json()["token"]
    for room in rooms[1:]:
        session_id = recorded[room]
        wait_for(lambda session_id=session_id: (c.api("GET", "/api/v1/sessions", token=token).json()
                 ["items"] and any(s["session_id"] == session_id and s["storage"]["s3"]
                                   for s in c.api("GET", "/api/v1/sessions", token=token).json()["items"])),
                 30, "the session stored and listed")
        assert any(key.endswith(f"{session_id}/manifest.json") for key in cluster.store.objects())
    dest = tmp_path / "mirror"
    done = fetch(a, token, dest)
    assert done.returncode == 0, done.stderr
    for room, holder in zip(rooms[1:], holders[1:]):
        session_id = recorded[room]
        assert verify(dest / session_id)[0] == 0
        assert (dest / session_id / "manifest.json").read_bytes() == (
            holder.session_dir(session_id) / "manifest.json").read_bytes()
        assert manifest(dest / session_id)["performers"][0]["file"] is not None

    # a manifest of another node's session, read through this one: the same bytes, by Range
    holder = holders[1]
    asker = next(n for n in cluster.nodes if n is not holder)
    whole = (holder.session_dir(recorded[rooms[1]]) / "manifest.json").read_bytes()
    ranged = httpx.get(f"{asker.url}/api/v1/sessions/{recorded[rooms[1]]}/files/manifest.json",
                       headers={"Authorization": f"Bearer {token}", "Range": "bytes=10-59"})
    assert ranged.status_code == 206 and ranged.content == whole[10:60]

    # events in one order, the same from every node; each webhook delivered once
    events = read_events(b, token, 4)
    assert read_events(a, token, 4) == events == read_events(c, token, 4)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    assert sorted((e["type"], e["data"]["session_id"]) for e in events) == sorted(
        [("session.started", s) for s in recorded.values()] + [("session.finalized", s) for s in recorded.values()])
    wait_for(lambda: len(cluster.receiver.accepted) >= 4, 20, "the webhooks")
    time.sleep(1)
    attempts = [a_["event_id"] for a_ in cluster.receiver.attempts]
    assert len(attempts) == len(set(attempts)) == len(cluster.receiver.accepted)

    # a revocation through another node reaches the session's node and the store: the
    # performer's file leaves both, the session's new revision is stored
    ann, session_b = performers[rooms[1]][0], recorded[rooms[1]]
    elsewhere = next(n for n in cluster.nodes if n is not holders[1])
    assert elsewhere.api("POST", f"/api/v1/performers/{ann}/revoke", json={"reason": "asked"}).status_code == 200
    def stored_entry() -> dict[str, Any] | None:
        key = next(k for k in cluster.store.objects() if k.endswith(f"{session_b}/manifest.json"))
        entry = next(p for p in json.loads(cluster.store.read(key))["performers"] if p["performer_id"] == ann)
        return entry if entry.get("withdrawn") else None

    entry = wait_for(stored_entry, 30, "the withdrawal in the stored manifest")
    assert entry["file"] is None and entry["withdrawn"]["reason"] == "asked"
    assert not any(key.endswith(f"{session_b}/performers/{ann}.webm") for key in cluster.store.objects())

    # a room deleted through another node is gone from Redis and from every list
    assert a.api("DELETE", f"/api/v1/rooms/{rooms[0]}").status_code == 200
    assert c.api("GET", f"/api/v1/rooms/{rooms[0]}").status_code == 404


def test_a_studio_copy_sent_to_another_node_reaches_the_rooms_node(
    cluster: Cluster, bots: BotFactory
) -> None:
    """A page uploads its high-quality copy to the node it was loaded from (its storage is that
    origin's); when the room is on another node (it moved there after its node died), the
    page's node sends the upload on: here a studio bot joins through a node that does not hold
    the room, follows the room, and uploads to the node it joined through."""
    a = cluster.nodes[0]
    created = a.api("POST", "/api/v1/rooms", json={"name": "studio elsewhere", "profile": "studio"})
    assert created.status_code == 201, created.text
    room = created.json()["room_id"]
    invite = a.invite(room, "Ann")
    holder = node_of(cluster, invite["url"])
    loaded_from = next(n for n in cluster.nodes if n is not holder)
    bot = bots(loaded_from.url + invite["url"][len(holder.url):], 60, "--follow",
               "--hq-size", "320x180")
    wait_for(lambda: publishing(holder, room, 1), 20, "the bot publishing on the room's node")
    session = start_recording(a, room)["session_id"]
    time.sleep(4)
    stop_recording(a, room)
    status, output, report = bot.finish(timeout=40)
    assert status == 0, output
    sent = report["hq"]
    assert sent["errors"] == [] and sent["chunks_acked"] == sent["chunks_recorded"] >= 2, sent

    def placed() -> dict[str, Any] | None:
        (entry,) = manifest(holder.session_dir(session))["performers"]
        return entry["hq"] if entry["hq"]["state"] == "complete" else None

    copy = wait_for(placed, 30, "the copy placed on the room's node")
    assert copy["upload"]["chunks"] == sent["chunks_acked"] and copy["upload"]["bytes"] == sent["bytes"]
    assert not loaded_from.session_dir(session).exists()  # it passed the upload on, kept nothing


def test_redis_restarted_mid_session_loses_nothing(cluster: Cluster, bots: BotFactory, tmp_path: Path) -> None:
    a, b, c = cluster.nodes
    room = b.create_room("through the restart")
    holder = node_of(cluster, b.invite(room, "x")["url"])
    session_id = start_recording(a, room)["session_id"]
    running = [bots(a.invite(room, name)["url"], 40, "--preencoded") for name in ("Cy", "Di")]
    wait_for(lambda: publishing(holder, room, 2), 20, "both performers")
    assert "improv_node_registered 1.0" in holder.api("GET", "/metrics").text
    cluster.redis.restart()  # empty: no node, no owner, no stream
    # the room goes on where it is; the nodes register again and claim their rooms again
    wait_for(lambda: len(cluster.live()) == 3, 15, "three nodes registered again")
    assert publishing(holder, room, 2)
    marked = wait_for(lambda: a.api("POST", f"/api/v1/rooms/{room}/markers",
                                    json={"kind": "scene", "label": "after"}).status_code == 201,
                      15, "an operator action through another node")
    assert marked
    time.sleep(1)
    for bot in running:
        assert bot.finish()[0] == 0
    stopped = stop_recording(a, room)
    assert stopped["state"] == "complete", stopped
    # the session as a reader gets it (the holder keeps no media once it is stored)
    token = a.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "after"}).json()["token"]
    wait_for(lambda: any(s["session_id"] == session_id and s["storage"]["s3"] for s in
                         c.api("GET", "/api/v1/sessions", token=token).json()["items"]), 30, "stored")
    done = fetch(c, token, tmp_path / "mirror")
    assert done.returncode == 0, done.stderr
    assert verify(tmp_path / "mirror" / session_id)[0] == 0
    archive = manifest(tmp_path / "mirror" / session_id)
    assert [m["label"] for m in archive["markers"]] == ["after"]
    for entry in archive["performers"]:
        assert all(not t["gaps"] for t in entry["tracks"]), entry["tracks"]


def test_a_recording_follows_its_room_to_a_live_node(cluster: Cluster, bots: BotFactory,
                                                     tmp_path: Path) -> None:
    """SIGKILL of the node recording a room: within 30 s a live node holds the room, with its
    name, invites and removed performers; its performers (bots that join again as a page does)
    find it there by themselves and the recording goes on, as a session that says which one
    it continues; the dead node, back, leaves the room to the new one, its part of the take
    is recovered and joins the session that went on."""
    a = cluster.nodes[0]
    room = a.create_room("recording through a death")
    first = start_recording(a, room)["session_id"]
    invites = [a.invite(room, name) for name in ("Eve", "Fay")]
    gone = a.invite(room, "Gone")
    assert a.api("DELETE", f"/api/v1/rooms/{room}/performers/{gone['performer_id']}").status_code == 200
    holder = node_of(cluster, invites[0]["url"])
    running = [bots(i["url"], 90, "--preencoded", "--follow") for i in invites]
    # a few seconds of both performers' media recorded before the node dies
    wait_for(lambda: arriving(holder, room, 2, 150), 20, "both performers' media")
    holder.stop(signal.SIGKILL)
    killed = time.monotonic()
    asker = next(n for n in cluster.nodes if n is not holder)

    def where_now() -> ServerProcess | None:
        """The room's node once both performers publish there again (asked through a live node)."""
        answer = asker.api("GET", f"/api/v1/rooms/{room}", timeout=30)
        if answer.status_code != 200:
            return None
        state = answer.json()
        if state["node_id"] == holder.env["IMPROV_NODE_ID"] or not publishing(asker, room, 2):
            return None
        return next(n for n in cluster.nodes if n.env["IMPROV_NODE_ID"] == state["node_id"])

    moved_to = wait_for(where_now, 30, "both performers publishing on the room's new node")
    assert time.monotonic() - killed <= 30
    # the room kept its name, invites and removed performers: the removed one stays out
    assert asker.api("GET", f"/api/v1/rooms/{room}").json()["name"] == "recording through a death"
    invited = {i["performer_id"] for i in asker.api("GET", f"/api/v1/rooms/{room}/invites").json()["items"]}
    assert {i["performer_id"] for i in (*invites, gone)} <= invited
    token_of_gone = gone["url"].split("#invite=", 1)[1]
    status, output, _ = bots(f"{moved_to.url}/join#invite={token_of_gone}", 5, "--preencoded").wait(30)
    assert status != 0 and "4403" in output, output
    state = moved_to.api("GET", f"/api/v1/rooms/{room}").json()
    second = state["recording"]["session_id"]
    assert second != first
    time.sleep(2)  # recorded a while on the new node
    for bot in running:
        status, output, report = bot.finish()
        assert status == 0, output
        assert report["rejoins"] >= 1, report
    stopped = stop_recording(asker, room)
    assert stopped["state"] == "complete", stopped
    continued = manifest(moved_to.session_dir(second))
    assert continued["continues"]["session_id"] == first
    assert continued["continues"]["node_id"] == holder.env["IMPROV_NODE_ID"]
    assert continued["continues"]["state"] == "missing"  # until the dead node is back
    for entry in continued["performers"]:
        assert entry["file"] is not None and all(t["frames"] > 0 for t in entry["tracks"]), entry

    # the dead node back: it leaves the room to its new node (asked through it, the new node
    # answers), its part of the take is recovered, and both parts are listed
    holder.start(timeout=40)
    wait_for(lambda: len(cluster.live()) == 3, 15, "the node back")
    assert [r["room_id"] for r in holder.api("GET", "/api/v1/rooms").json()["items"]].count(room) == 1
    later = holder.api("POST", f"/api/v1/rooms/{room}/invites", json={"display_name": "After"})
    assert later.status_code == 201 and later.json()["url"].startswith(moved_to.url + "/")
    token = asker.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "parts"}).json()["token"]

    def parts() -> dict[str, str]:
        items = asker.api("GET", "/api/v1/sessions", token=token).json()["items"]
        return {s["session_id"]: s["state"] for s in items if s["session_id"] in (first, second)}

    wait_for(lambda: len(parts()) == 2, 30, "both parts listed")
    assert parts() == {first: "partial", second: "complete"}, parts()

    # and its part joins the session that went on: fetched from it, checked, placed under
    # parts/, a new revision that a mirror fetches whole
    second_dir = moved_to.session_dir(second)

    def joined() -> dict[str, Any] | None:
        found = manifest(second_dir)
        return found if found["continues"]["state"] == "merged" else None

    merged = wait_for(joined, 30, "the earlier part joined")
    recovered = manifest(holder.session_dir(first))
    assert merged["revision"] == 2 and merged["continues"]["path"] == f"parts/{first}"
    assert merged["continues"]["offset_s"] == pytest.approx(
        parse_utc(recovered["started_at"]) - parse_utc(merged["started_at"]), abs=1e-6)
    assert -30 < merged["continues"]["gap"]["start_s"] < merged["continues"]["gap"]["end_s"] == 0
    for entry in merged["performers"]:
        earlier_file = entry["earlier"]["file"]
        original = next(p for p in recovered["performers"] if p["performer_id"] == entry["performer_id"])
        assert earlier_file["sha256"] == original["file"]["sha256"], entry["performer_id"]
        assert entry["earlier"]["tracks"] == original["tracks"]
        assert all(t["frames"] > 0 for t in original["tracks"]), original  # what it had recorded
    # (the nodes keep no local copy of what the store holds: read through a mirror)
    mirrored = tmp_path / "merged"
    assert fetch(asker, token, mirrored).returncode == 0
    assert manifest(mirrored / second) == merged
    status, report = verify(mirrored / second)
    assert status == 0, report["defects"]
    assert all(p["earlier"]["video_frames"] > 0 for p in report["performers"].values())
