"""Watching a running server as an operator does: Prometheus scrapes of /metrics while two bots
record a take, the probes a load balancer asks (/healthz, /readyz), and the JSON log lines a
log shipper reads from stderr. One server for all of it (JSON logs and a metrics token set);
a second one only for a disk floor above the disk's free space."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    BotProcess,
    ServerProcess,
    publishing,
    start_recording,
    stop_recording,
    wait_for,
)

pytestmark = pytest.mark.process

METRICS_TOKEN = "scraper-" + secrets.token_hex(12)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def stderr_to(path: Path) -> Callable[[], None]:
    """The server's stderr (its log lines) into a file of its own, apart from the banner that
    `serve` prints on stdout."""
    def redirect() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    return redirect


def scrape(server: ServerProcess, token: str = METRICS_TOKEN) -> Samples:
    """What Prometheus reads: every sample by name and labels."""
    response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"},
                         timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and wanted <= key}


@dataclass
class Take:
    """What the operator saw of one recorded take of two bots."""

    room_id: str
    performers: list[str]
    invite_tokens: list[str]
    session_id: str = ""
    during: Samples = field(default_factory=dict)
    between: tuple[Samples, Samples] = ({}, {})
    after_stop: Samples = field(default_factory=dict)
    after_leave: Samples = field(default_factory=dict)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("observed")
    server = ServerProcess(
        base / "data",
        env={"IMPROV_LOG_FORMAT": "json", "IMPROV_METRICS_TOKEN": METRICS_TOKEN},
        preexec=stderr_to(base / "stderr.log"),
    )
    try:
        yield server.start()
    finally:
        server.stop()


def log_lines(server: ServerProcess) -> list[str]:
    return (server.data_dir.parent / "stderr.log").read_text().splitlines()


def all_present(samples: Samples, name: str, performers: list[str], **labels: str) -> bool:
    return all(value(samples, name, performer_id=p, **labels) is not None for p in performers)


@pytest.fixture(scope="module")
def take(observed: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Take:
    """Two bots join a studio room, a recording runs until every per-performer series is
    there and both high-quality copies are arriving, stops; the bots leave once their copies
    are sent, and the copies are placed. Scrapes are kept at each step."""
    server = observed
    room = server.create_room("watched", profile="studio")
    invites = [server.invite(room, name) for name in ("Ann", "Ben")]
    seen = Take(room, [i["performer_id"] for i in invites], [i["token"] for i in invites])
    reports = tmp_path_factory.mktemp("bots")
    bots = [BotProcess(i["url"], 60, reports / f"{n}.json", ("--hq-size", "320x180")).start()
            for n, i in enumerate(invites)]
    try:
        wait_for(lambda: publishing(server, room, 2), 30, "both bots publishing")
        seen.session_id = start_recording(server, room)["session_id"]

        def complete() -> Samples | None:
            samples = scrape(server)
            ready = all(
                all_present(samples, "improv_performer_bitrate_bits_per_second", seen.performers,
                            room_id=room, kind=kind)
                and min(series(samples, "improv_performer_bitrate_bits_per_second",
                               room_id=room, kind=kind).values()) > 0
                for kind in ("video", "audio")
            ) and all_present(samples, "improv_performer_rtt_seconds", seen.performers, room_id=room)
            uploading = series(samples, "improv_hq_upload_received_bytes", room_id=room,
                               session_id=seen.session_id)
            ready = ready and len(uploading) == 2 and min(uploading.values()) > 0
            return samples if ready else None

        seen.during = wait_for(complete, 20, "bitrate, RTT and uploads of both performers",
                               every=0.5)
        first = scrape(server)
        for _ in range(3):
            assert server.api("GET", f"/api/v1/rooms/{room}").status_code == 200
        seen.between = (first, scrape(server))
        stop_recording(server, room)
        seen.after_stop = scrape(server)
        for bot in bots:  # each leaves now, and exits once its copy is all sent
            code, output, _ = bot.finish(timeout=40)
            assert code == 0, output

        def placed() -> Samples | None:
            samples = scrape(server)
            return samples if value(samples, "improv_hq_uploads", state="complete") == 2 else None

        seen.after_leave = wait_for(placed, 30, "both copies placed", every=0.25)
    finally:
        for bot in bots:
            bot.stop()
    return seen


def test_a_scrape_during_a_recorded_take_shows_the_room(take: Take) -> None:
    during, room = take.during, take.room_id
    assert value(during, "improv_rooms") == 1
    assert value(during, "improv_performers", state="joined") == 2
    assert value(during, "improv_performers", state="reconnecting") == 0
    assert value(during, "improv_recordings") == 1
    for performer in take.performers:
        ids = {"room_id": room, "performer_id": performer}
        for kind in ("video", "audio"):
            assert value(during, "improv_performer_bitrate_bits_per_second", **ids, kind=kind) > 0
            assert 0 <= value(during, "improv_performer_packet_loss_ratio", **ids, kind=kind) < 0.05
            assert value(during, "improv_performer_jitter_seconds", **ids, kind=kind) >= 0
        assert 0 < value(during, "improv_performer_rtt_seconds", **ids) < 0.5
        assert value(during, "improv_performer_video_frames_per_second", **ids) > 0
    # the recorder keeps up with two bots: its queue is bounded and nothing was dropped
    assert 0 <= value(during, "improv_recorder_queue_items", room_id=room) <= \
        value(during, "improv_recorder_queue_capacity_items")
    assert value(during, "improv_recorder_dropped_items_total", room_id=room) == 0
    assert value(during, "improv_websockets_open", route="/api/v1/signal") == 2
    # each studio performer's high-quality copy, arriving while the take runs
    assert value(during, "improv_hq_uploads", state="uploading") == 2
    for performer in take.performers:
        ids = {"room_id": room, "session_id": take.session_id, "performer_id": performer}
        assert value(during, "improv_hq_upload_received_bytes", **ids) > 0
        assert value(during, "improv_hq_upload_acked_chunks", **ids) >= 1
    assert value(during, "improv_websockets_opened_total", route="/api/v1/signal") >= 2
    assert value(during, "improv_data_dir_free_bytes") > 0
    assert value(during, "improv_webhook_deliveries", status="pending") == 0
    assert value(during, "process_resident_memory_bytes") > 0


def test_the_http_counter_counts_by_route_template(take: Take) -> None:
    before, after = take.between
    route = {"method": "GET", "route": "/api/v1/rooms/{room_id}", "status": "200"}
    assert (value(after, "improv_http_requests_total", **route) or 0) - \
        (value(before, "improv_http_requests_total", **route) or 0) == 3
    assert value(after, "improv_http_requests_total", method="GET", route="/metrics",
                 status="200") > (value(before, "improv_http_requests_total", method="GET",
                                        route="/metrics", status="200") or 0)
    # never a path a client sent: no room id in any route label
    assert not [key for (name, key) in after if take.room_id in dict(key).get("route", "")]


def test_after_the_stop_and_the_leave_the_series_are_gone(take: Take) -> None:
    stopped, left, room = take.after_stop, take.after_leave, take.room_id
    assert value(stopped, "improv_recordings") == 0
    assert not series(stopped, "improv_recorder_queue_items", room_id=room)
    assert value(stopped, "improv_performers", state="joined") == 2
    assert value(left, "improv_rooms") == 1 and value(left, "improv_performers", state="joined") == 0
    for name in ("improv_performer_bitrate_bits_per_second", "improv_performer_rtt_seconds"):
        assert not series(left, name, room_id=room), name
    assert value(left, "improv_websockets_open", route="/api/v1/signal") == 0
    # the copies are placed: counted as complete, their progress series gone
    assert value(left, "improv_hq_uploads", state="uploading") == 0
    assert not series(left, "improv_hq_upload_received_bytes", room_id=room)
    assert value(left, "improv_websockets_closed_total", route="/api/v1/signal") >= 2


def test_metrics_take_the_operator_or_the_metrics_token_which_opens_nothing_else(
    observed: ServerProcess, take: Take
) -> None:
    url = f"{observed.url}/metrics"
    assert httpx.get(url).status_code == 401
    for wrong in ("Bearer nope-not-a-token", f"Bearer {take.invite_tokens[0]}", METRICS_TOKEN):
        answer = httpx.get(url, headers={"Authorization": wrong})
        assert answer.status_code == 401, wrong
        assert answer.headers["www-authenticate"] == "Bearer"
    assert value(scrape(observed, observed.token), "improv_rooms") == 1
    # Prometheus asks for OpenMetrics, and gets it
    open_metrics = httpx.get(url, headers={
        "Authorization": f"Bearer {METRICS_TOKEN}",
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name for f in openmetrics_families(open_metrics.text)}
    assert {"improv_rooms", "improv_http_requests", "improv_websockets_opened"} <= families
    # the scraper's token reads metrics only
    for method, path in (("GET", "/api/v1/rooms"), ("GET", "/api/v1/sessions"),
                         ("POST", "/api/v1/rooms")):
        assert observed.api(method, path, token=METRICS_TOKEN).status_code == 401, path


def test_json_logs_carry_the_ids_and_no_token(observed: ServerProcess, take: Take) -> None:
    # a token a client put in a query reaches the access log redacted
    leaked = take.invite_tokens[1]
    assert httpx.get(f"{observed.url}/healthz?invite={leaked}").status_code == 200

    def with_access_line() -> list[str] | None:
        lines = log_lines(observed)
        return lines if any("/healthz?invite=[redacted]" in line for line in lines) else None

    lines = wait_for(with_access_line, 5, "the access line")
    records = []
    for line in lines:
        record = json.loads(line)  # every stderr line is one JSON object
        assert {"ts", "level", "logger", "message"} <= set(record), record
        records.append(record)
    secrets_ = [*take.invite_tokens, observed.token, METRICS_TOKEN]
    assert not [line for line in lines if any(s in line for s in secrets_)]
    joined = [r for r in records if r["logger"] == "improv_capture.rooms.seats"
              and "joined" in r["message"]]
    assert {(r.get("room_id"), r.get("performer_id")) for r in joined} == {
        (take.room_id, p) for p in take.performers}
    # the recording's lines carry its session; a console route's lines its room
    finalised = [r for r in records if "finalised" in r["message"]]
    assert finalised and all(r.get("session_id") == take.session_id
                             and r.get("room_id") == take.room_id for r in finalised)
    access = [r for r in records if r["logger"] == "uvicorn.access"
              and f"/api/v1/rooms/{take.room_id} " in r["message"]]
    assert len(access) >= 3 and all(r.get("room_id") == take.room_id for r in access)


def test_ready_until_the_data_dir_turns_read_only(observed: ServerProcess, take: Take) -> None:
    ready = httpx.get(f"{observed.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {
        "data_dir_writable": {"ok": True}, "disk_free": {"ok": True}, "index": {"ok": True}}}
    # a filesystem remounted read-only (what ext4 does after an error): as root, a read-only
    # bind mount over the data dir; chmod would not stop root
    data = str(observed.data_dir)
    mounted = subprocess.run(["mount", "--bind", data, data], capture_output=True, text=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount the data dir read-only here: {mounted.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", data], check=True, capture_output=True)
        answer = httpx.get(f"{observed.url}/readyz")
        assert answer.status_code == 503
        assert answer.json()["failed"] == ["data_dir_writable"]
        assert answer.json()["checks"]["data_dir_writable"] == {
            "ok": False, "error": "Read-only file system"}
        assert httpx.get(f"{observed.url}/healthz").json() == {"status": "ok"}  # still alive
    finally:
        subprocess.run(["umount", data], check=True)
    assert httpx.get(f"{observed.url}/readyz").status_code == 200
    assert not list(observed.data_dir.glob(".ready-probe-*"))


def test_not_ready_below_the_disk_floor(tmp_path: Path) -> None:
    """A floor above the disk's free space: not ready, and the scrape shows why."""
    server = ServerProcess(tmp_path / "data", env={"IMPROV_MIN_FREE_BYTES": str(2**62)}).start()
    try:
        answer = httpx.get(f"{server.url}/readyz")
        assert answer.status_code == 503
        assert answer.json()["failed"] == ["disk_free"]
        assert answer.json()["checks"]["disk_free"] == {
            "ok": False, "error": "free space below IMPROV_MIN_FREE_BYTES"}
        samples = scrape(server, server.token)
        assert value(samples, "improv_data_dir_free_bytes") < \
            value(samples, "improv_data_dir_min_free_bytes") == 2**62
    finally:
        server.stop()
