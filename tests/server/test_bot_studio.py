"""The bot as a studio performer: its local full-quality recording is a live WebM stream cut
in chunks that concatenate into the whole take, on the bot's wall clock; in a studio room two
bots upload theirs during and after the take and the session gains both high-quality copies."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import av
import httpx
import numpy as np
import pytest

from improv_capture.tools.bot.media import AUDIO_RATE, BEEP_HZ, BEEP_S, FLASH_LUMA, SECOND_CODES
from improv_capture.tools.bot.studio import StudioOptions, Take, parse_size
from improv_capture.tools.bot.studio_recorder import HqFormat, LocalRecorder
from improv_capture.tools.bot.studio_upload import Pacer, Uploader, UploadStats
from tests.helpers import (
    BotFactory,
    ServerProcess,
    free_port,
    manifest,
    publishing,
    start_recording,
    stop_recording,
    verify,
    wait_for,
)

pytestmark = pytest.mark.process

EBML_MAGIC = bytes.fromhex("1a45dfa3")
SEGMENT_OF_UNKNOWN_SIZE = bytes.fromhex("18538067 01ffffffffffffff")


def record(fmt: HqFormat, seconds: float) -> tuple[LocalRecorder, list[bytes]]:
    """What the recorder hands over in ``seconds`` of recording: its chunks, in order."""
    chunks: list[bytes] = []
    closed = threading.Event()

    def on_chunk(chunk: bytes | None) -> None:
        if chunk is None:
            closed.set()
        else:
            chunks.append(chunk)

    recorder = LocalRecorder(fmt, on_chunk)
    started_at = recorder.start()
    time.sleep(started_at + seconds - time.time())
    recorder.stop()
    assert closed.wait(10), "the recorder did not close its stream"
    recorder.join(5)
    return recorder, chunks


SMALL = HqFormat(width=320, height=180, frame_rate=30, video_bitrate=500_000,
                 audio_bitrate=64_000, chunk_s=0.5, max_chunk_bytes=2**20)


class FlakyUploads:
    """An upload server on loopback that makes the bot work for each acknowledgement: the
    first attempt of every chunk gets 503, the second of chunk 1 a 507 (disk full), the first
    of chunk 2 a dropped connection; a chunk at ``refuse_index`` gets 413 for good."""

    def __init__(self, refuse_index: int | None = None) -> None:
        self.refuse_index = refuse_index
        self.attempts: dict[int, int] = {}
        self.chunks: dict[int, bytes] = {}
        self.part: dict[str, Any] | None = None
        self.ended: dict[str, Any] | None = None
        self.port = free_port()
        uploads = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_PUT(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.endswith("/hq/parts/0"):
                    uploads.part = json.loads(body)
                    return self.answer(201, {"part": 0})
                index = int(self.path.rsplit("/", 1)[1])
                assert hashlib.sha256(body).hexdigest() == self.headers["X-Chunk-Sha256"]
                attempt = uploads.attempts[index] = uploads.attempts.get(index, 0) + 1
                if index == uploads.refuse_index:
                    return self.answer(413, {"detail": "upload cap of 1 bytes reached"})
                if index == 2 and attempt == 1:
                    self.close_connection = True  # no answer at all
                    return
                if attempt == 1:
                    return self.answer(503, {"detail": "too many uploads at once; retry"})
                if index == 1 and attempt == 2:
                    return self.answer(507, {"detail": "the server's disk is full"})
                assert uploads.chunks.setdefault(index, body) == body  # never a changed body
                self.answer(201, {"part": 0, "index": index, "bytes": len(body)})

            def do_POST(self) -> None:  # noqa: N802
                uploads.ended = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.answer(200, {"part": 0})

            def answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status in (503, 507):
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.port}/api/v1/rooms/r/sessions/s/performers/p/hq"

    def __enter__(self) -> FlakyUploads:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky() -> Iterator[FlakyUploads]:
    with FlakyUploads() as uploads:
        yield uploads


async def upload_take(url: str, seconds: float) -> tuple[Take, UploadStats]:
    """Record ``seconds`` of SMALL and upload it to ``url`` as the bot does; its stats."""
    stats = UploadStats()
    async with httpx.AsyncClient() as client:
        take = Take(SMALL, Uploader(client, url, Pacer(None), stats), StudioOptions())
        take.start()
        await asyncio.sleep(seconds)
        take.stop()
        await take.finished()
    return take, stats


async def test_every_chunk_is_retried_until_acknowledged(flaky: FlakyUploads) -> None:
    take, stats = await upload_take(flaky.url, 2.0)
    assert stats.errors == [] and stats.parts == 1
    assert stats.chunks_acked == stats.chunks_recorded == take.recorded >= 4
    # 503 on each chunk's first try, a 507 and a dropped connection: retried, nothing lost
    assert stats.retries == len(flaky.chunks) + 1
    assert sorted(flaky.chunks) == list(range(stats.chunks_acked))
    assert flaky.ended == {"chunks": stats.chunks_acked}
    assert flaky.part is not None
    assert flaky.part["started_at_ms"] == take.recorder.started_at * 1000  # type: ignore[operator]
    assert flaky.part["video"]["width"] == 320 and flaky.part["audio"]["sample_rate"] == AUDIO_RATE
    stream = b"".join(flaky.chunks[i] for i in range(stats.chunks_acked))
    with av.open(io.BytesIO(stream)) as container:
        assert sum(1 for _ in container.decode(video=0)) == take.recorder.video_frames


async def test_a_refused_chunk_stops_the_upload_and_is_reported() -> None:
    with FlakyUploads(refuse_index=1) as uploads:
        take, stats = await upload_take(uploads.url, 1.5)
    assert stats.chunks_acked == 1 and uploads.ended is None
    assert stats.errors == ["PUT /parts/0/chunks/1: 413 upload cap of 1 bytes reached "
                            "(stopped uploading at chunk 1)"]
    assert not take.recorder.running


async def test_pacing_spaces_uploads_until_the_take_stops() -> None:
    pacer = Pacer(80.0)  # 10 kB a second
    pacer.sent(5_000)
    started = time.monotonic()
    await pacer.wait()
    assert 0.4 < time.monotonic() - started < 0.7
    pacer.sent(50_000)  # 5 s of budget: the stop ends the wait at once
    asyncio.get_running_loop().call_later(0.2, pacer.unpace)
    started = time.monotonic()
    await pacer.wait()
    assert time.monotonic() - started < 0.5


def test_local_recording_is_a_live_webm_in_chunks_on_the_wall_clock() -> None:
    fmt = HqFormat(width=1280, height=720, frame_rate=30, video_bitrate=4_000_000,
                   audio_bitrate=128_000, chunk_s=1.0, max_chunk_bytes=8 * 2**20)
    recorder, chunks = record(fmt, 2.5)
    assert recorder.error is None and recorder.started_at is not None
    # a frame is skipped only when the machine is too busy to encode it in time
    assert recorder.video_frames + recorder.frames_skipped in range(74, 78)
    # timed chunks: one a second and the rest at the stop; only the first opens the stream
    assert len(chunks) == recorder.chunks >= 3, [len(c) for c in chunks]
    assert chunks[0].startswith(EBML_MAGIC)
    assert not any(c.startswith(EBML_MAGIC) for c in chunks[1:])
    stream = b"".join(chunks)
    assert SEGMENT_OF_UNKNOWN_SIZE in stream[:100]  # live: written once, never patched

    with av.open(io.BytesIO(stream)) as container:
        frames = [(f.time, f.to_ndarray()[: f.height]) for f in container.decode(video=0)]
    video = [(t, luma.shape[1], luma.shape[0], luma[::8, ::8].mean()) for t, luma in frames]
    assert len(video) == recorder.video_frames
    assert {(w, h) for _, w, h, _ in video} == {(1280, 720)}
    assert video[0][0] == 0.0  # t=0 is the first frame, at started_at on the wall clock
    # each frame shows its slot of the wall clock: white exactly on whole seconds
    flashes = [(recorder.started_at + t, luma > FLASH_LUMA - 20) for t, _, _, luma in video]
    assert all(white == (abs(t - round(t)) < 0.002) for t, white in flashes), flashes
    assert any(white for _, white in flashes)
    # and each second its code: where the grey block sits in the band at 2/3 of the height
    for t, luma in frames:
        wall = recorder.started_at + t
        if abs(wall - round(wall)) > 0.002:
            band = luma[480:600].reshape(120, SECOND_CODES, -1).mean(axis=(0, 2))
            assert int(np.argmax(band)) == int(wall) % SECOND_CODES, (wall, band)

    with av.open(io.BytesIO(stream)) as container:
        (audio_stream,) = container.streams.audio
        assert audio_stream.codec_context.name == "opus" and audio_stream.rate == AUDIO_RATE
        frames = list(container.decode(audio=0))
    assert frames[0].time == 0.0 and {f.sample_rate for f in frames} == {AUDIO_RATE}
    pcm = np.concatenate([f.to_ndarray()[0] for f in frames])
    assert len(pcm) >= 0.98 * 2.5 * AUDIO_RATE
    # the beep: loud in the first 100 ms of each whole second of the wall clock, silent after
    wall = recorder.started_at + np.arange(len(pcm)) / AUDIO_RATE
    second = np.mod(wall, 1.0)
    assert np.sqrt(np.mean(pcm[(second > 0.01) & (second < 0.09)] ** 2)) > 0.2
    assert np.sqrt(np.mean(pcm[(second > 0.15) & (second < 0.95)] ** 2)) < 0.01
    # the beep's pitch is the second's code: 1000 Hz + 125 Hz x (second mod SECOND_CODES)
    for whole in range(int(np.ceil(wall[0])), int(wall[-1] - BEEP_S)):
        beep = pcm[(wall >= whole + 0.005) & (wall < whole + BEEP_S - 0.005)]
        spectrum = np.abs(np.fft.rfft(beep, 48_000))  # 1 Hz bins
        assert abs(int(np.argmax(spectrum)) - BEEP_HZ * (1 + whole % SECOND_CODES / SECOND_CODES)) <= 2


def test_two_studio_bots_upload_their_copies_and_the_session_gains_them(
    server: ServerProcess, bots: BotFactory
) -> None:
    created = server.api("POST", "/api/v1/rooms", json={"name": "s", "profile": "studio"})
    assert created.status_code == 201, created.text
    room = created.json()["room_id"]
    invites = [server.invite(room, name) for name in ("Ann", "Ben")]
    running = [bots(invite["url"], 60, "--hq-size", "640x360") for invite in invites]
    wait_for(lambda: publishing(server, room, 2), 20, "both bots publishing")
    session = start_recording(server, room)
    time.sleep(6)
    stop_recording(server, room)

    reports = {}
    for bot in running:  # each leaves now, and exits once its copy is all uploaded
        status, output, report = bot.finish(timeout=40)
        assert status == 0, output
        reports[report["performer_id"]] = report["hq"]
    for pid, hq in reports.items():
        assert hq["errors"] == [], (pid, hq)
        assert hq["parts"] == 1 and hq["chunks_recorded"] >= 3, (pid, hq)
        assert hq["chunks_acked"] == hq["chunks_recorded"], (pid, hq)
        assert hq["bytes"] > 0 and hq["first_chunk_at"] and hq["last_chunk_at"], (pid, hq)

    session_dir = server.session_dir(session["session_id"])

    def settled() -> dict[str, dict[str, object]] | None:
        performers = {p["performer_id"]: p.get("hq") or {} for p in manifest(session_dir)["performers"]}
        return performers if all(h.get("state") == "complete" for h in performers.values()) else None

    copies = wait_for(settled, 20, "both high-quality copies complete", every=0.25)
    assert set(copies) == set(reports)
    for pid, copy in copies.items():
        file = copy["file"]
        assert isinstance(file, dict) and (session_dir / file["path"]).stat().st_size == file["bytes"]
        assert (copy["width"], copy["height"]) == (640, 360), copy
        upload = copy["upload"]
        assert isinstance(upload, dict)
        assert upload["chunks"] == reports[pid]["chunks_acked"], (upload, reports[pid])
        assert upload["bytes"] == reports[pid]["bytes"], (upload, reports[pid])
        # placed by its content near where the bot's clock says: the bot's picture and sound
        # never repeat within the search, so the placement cannot slip by whole seconds
        (placed,) = copy["alignment"]["parts"]  # type: ignore[index]
        assert placed["video"]["matched_frames"] > 0, placed
        for kind in ("audio", "video"):
            assert abs(placed[kind]["offset_s"] - placed["coarse_s"]) < 0.4, placed
    status, report = verify(session_dir)
    assert status == 0, report["defects"]


def test_hq_size_must_be_even_sides() -> None:
    assert parse_size("640x360") == (640, 360)
    for bad in ("640", "641x360", "0x0", "axb"):
        with pytest.raises(ValueError):
            parse_size(bad)
