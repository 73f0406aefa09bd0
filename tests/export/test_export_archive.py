"""`improv-capture export` on synthetic archives written as the recorder writes them: two
sessions with takes, prompts and consent; every format written and loaded with its own
library (lhotse, datasets, webdataset); WAVs checked sample by sample against the archive's
decoded sound, clips against its packets; deterministic and incremental output; a withdrawn
performer gone everywhere after the next run; bad input refused with its message and nothing
half-written left in DEST."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import tarfile
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from improv_capture.cli import main
from improv_capture.recorder.files import file_entry, sha256_file
from improv_capture.recorder.finalise import finalise_session
from improv_capture.recorder.hq.entry import hq_entry
from improv_capture.recorder.manifest import rewrite_manifest
from improv_capture.recorder.synthetic import Scene, write_scene_webm, write_session, write_studio_session
from improv_capture.recorder.export.takes import PROMPT_GRACE_S, session_takes
from improv_capture.recorder.withdraw import withdraw_performer

pytestmark = pytest.mark.unit

RATE = 48000
STARTED = 1_700_000_000.0
CONSENT = {"version": 3, "text_sha256": "c0" * 32, "accepted_at": "2023-11-14T22:13:20.000000Z"}
KEYFRAME_AFTER_S = 0.2  # the brief's rule (video.py holds the constant)

# session A: two performers captured and finalised as the live recorder does
SESSION_A = "ses_20231114T221320Z_aaaaaa"
A_SECONDS = 6.0
A_MARKERS = [{"t_s": 0.8, "kind": "take", "label": "argument", "data": None},
             {"t_s": 1.5, "kind": "note", "label": "laughs", "data": None},
             {"t_s": 2.9, "kind": "cut", "label": None, "data": None},
             {"t_s": 3.4, "kind": "scene", "label": "reunion", "data": None}]
A_PROMPTS = [{"t_s": 0.5, "text": "You lost my keys", "target_emotion": "anger", "intensity": 3},
             {"t_s": 3.0, "text": "Make up", "target_emotion": "joy", "intensity": 0.5}]

# session B: a studio session; p_early has a high-quality copy over part of it, p_late joins
SESSION_B = "ses_20231114T231320Z_bbbbbb"
B_SECONDS = 6.0
LATE_JOIN_S = 3.5
HQ_COVERAGE = (0.3, 4.5)
B_MARKERS = [{"t_s": 0.5, "kind": "take", "label": "first", "data": None},
             {"t_s": 2.5, "kind": "cut", "label": None, "data": None},
             {"t_s": 3.2, "kind": "take", "label": "second", "data": None}]
#: a loss the manifest records (the session is partial): flagged where the live video is used
LIVE_VIDEO_GAP = {"start_s": 5.0, "end_s": 5.4, "reason": "lost upstream", "dropped_frames": 12}
B_PROMPTS = [{"t_s": 0.2, "text": "Whisper", "target_emotion": "fear", "intensity": 1},
             {"t_s": 2.8, "text": "Shout", "target_emotion": "surprise", "intensity": 5}]


def expected_takes(markers: list[dict[str, Any]], prompts: list[dict[str, Any]], duration: float
                   ) -> list[tuple[float, float, str, dict[str, Any]]]:
    """(start, end, label, prompt) of the fixtures' takes: each take/scene marker opens one,
    the next marker of take/scene/cut or the end closes it; its prompt is the last pushed
    before its start or within PROMPT_GRACE_S after it."""
    cuts = [m for m in markers if m["kind"] in ("take", "scene", "cut")]
    takes = []
    for n, marker in enumerate(cuts):
        if marker["kind"] == "cut":
            continue
        end = cuts[n + 1]["t_s"] if n + 1 < len(cuts) else duration
        prompt = [p for p in prompts if p["t_s"] < min(marker["t_s"] + PROMPT_GRACE_S, end)][-1]
        takes.append((marker["t_s"], end, marker["label"], prompt))
    return takes


def build_session_a(path: Path) -> None:
    write_session(path, performers=2, seconds=A_SECONDS - 0.5, started_unix=STARTED, video_size=(160, 120))
    finalise_session(path)

    def change(manifest: dict[str, Any]) -> None:
        manifest["markers"], manifest["prompts"] = A_MARKERS, A_PROMPTS
        for performer in manifest["performers"]:
            performer["consent"] = CONSENT
    rewrite_manifest(path, change)


def build_session_b(path: Path) -> None:
    write_studio_session(path, Scene(seed=11), STARTED + 3600, B_SECONDS, "p_early")
    performers = path / "performers"
    late_frames = int((B_SECONDS - LATE_JOIN_S) * 30)
    write_scene_webm(performers / "p_late.webm", Scene(seed=5), 160, 90,
                     [(n, LATE_JOIN_S + n / 30) for n in range(late_frames)],
                     (0, int((B_SECONDS - LATE_JOIN_S) * RATE), LATE_JOIN_S), video_bitrate=200_000)
    start, end = HQ_COVERAGE
    write_scene_webm(performers / "p_early.hq.webm", Scene(seed=7), 320, 180,
                     [(n, start + n / 30) for n in range(int((end - start) * 30))],
                     (0, int((end - start) * RATE), start))

    def change(manifest: dict[str, Any]) -> None:
        early = manifest["performers"][0]
        late = json.loads(json.dumps(early))
        late.update(performer_id="p_late", display_name="Late performer", joined_at_s=LATE_JOIN_S,
                    file=file_entry(path, performers / "p_late.webm"), hq=hq_entry("uploading"))
        late["sync"]["method"] = "arrival"  # placed by arrival times: its A/V offset is flagged
        for track in late["tracks"]:
            track["start_s"] = LATE_JOIN_S
        hq = hq_entry("complete")
        hq.update(file=file_entry(path, performers / "p_early.hq.webm"), codecs={"audio": "opus", "video": "vp8"},
                  coverage=[{"start_s": start, "end_s": end}],
                  alignment={"method": "cross-correlation", "parts": []})
        early["hq"] = hq
        manifest["performers"].append(late)
        manifest["files"] += [late["file"], hq["file"]]
        video = next(t for t in early["tracks"] if t["kind"] == "video")
        video["gaps"] = [LIVE_VIDEO_GAP]
        manifest["state"], manifest["reason"] = "partial", "p_early video: lost upstream"
        manifest["markers"], manifest["prompts"] = B_MARKERS, B_PROMPTS
        for performer in manifest["performers"]:
            performer["consent"] = CONSENT
    rewrite_manifest(path, change)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fetch mirror holding both sessions."""
    root = tmp_path_factory.mktemp("mirror")
    build_session_a(root / SESSION_A)
    build_session_b(root / SESSION_B)
    (root / ".improv-fetch.json").write_text("{}")  # the mirror's own file: not a session
    return root


def export(src: Path, dest: Path, *extra: str, capsys: pytest.CaptureFixture[str] | None = None
           ) -> tuple[int, str, str]:
    status = main(["export", str(src), "--dest", str(dest), "--quiet" if capsys is None else "--progress",
                   *extra])
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return status, out, err


ALL_FORMATS = ("--format", "lhotse,hf", "--format", "webdataset", "--format", "rttm")


@pytest.fixture(scope="module")
def exported(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "dataset"
    assert export(archive, dest, *ALL_FORMATS)[0] == 0
    return dest


def manifest_of(session: Path) -> dict[str, Any]:
    return dict(json.loads((session / "manifest.json").read_text()))


def samples_meta(dest: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((dest / "media").glob("*/*.json"))}


def read_wav(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def decoded_run(path: Path) -> tuple[int, np.ndarray]:
    """The file's sound decoded by PyAV as one unbroken run of s16 mono samples (the mean of
    the channels, x 32768, rounded, clipped) and the session sample where it starts: the
    synthetic streams have no gaps, and the first frame, shortened by the Opus pre-skip, ends
    where the second begins."""
    with av.open(str(path)) as container:
        frames = [(round(f.pts * f.time_base * RATE), f.to_ndarray()) for f in container.decode(audio=0)]
    stamps = [stamp for stamp, _ in frames]
    sizes = [data.shape[1] for _, data in frames]
    assert all(stamps[i + 1] - stamps[i] == sizes[i] for i in range(1, len(frames) - 1))
    mono = np.concatenate([data for _, data in frames], axis=1).mean(axis=0)
    return stamps[1] - sizes[0], np.clip(np.rint(mono * 32768), -32768, 32767).astype(np.int16)


def expected_wav(first: int, count: int, runs: list[tuple[tuple[int, np.ndarray], float, float]]) -> np.ndarray:
    """Session samples [first, first + count): each run's samples over its stretch, else 0."""
    out = np.zeros(count, np.int16)
    for (start, run), a, b in runs:
        low = max(first, start, int(round(a * RATE)))
        high = min(first + count, start + run.size, int(round(b * RATE)))
        if high > low:
            out[low - first : high - first] = run[low - start : high - start]
    return out


# --- the takes, the tables and the sample JSON -------------------------------------------------

def test_takes_and_performers_follow_the_manifest(archive: Path, exported: Path) -> None:
    rows = list(csv.DictReader((exported / "takes.csv").read_text().splitlines()))
    expected = []
    for session, markers, prompts in ((SESSION_A, A_MARKERS, A_PROMPTS), (SESSION_B, B_MARKERS, B_PROMPTS)):
        duration = manifest_of(archive / session)["duration_s"]
        for n, (start, end, label, prompt) in enumerate(expected_takes(markers, prompts, duration), 1):
            expected.append({"session_id": session, "take_id": f"{session}_t{n:03d}", "index": str(n),
                             "start_s": str(float(start)), "end_s": str(float(end)), "label": label,
                             "prompt_text": prompt["text"], "target_emotion": prompt["target_emotion"],
                             "intensity": str(prompt["intensity"])})
    assert rows == expected
    performers = list(csv.DictReader((exported / "performers.csv").read_text().splitlines()))
    listed = [(s, p["performer_id"]) for s in (SESSION_A, SESSION_B)
              for p in sorted(manifest_of(archive / s)["performers"], key=lambda p: p["performer_id"])]
    assert [(r["session_id"], r["performer_id"]) for r in performers] == listed
    assert all(r["consent_version"] == str(CONSENT["version"]) and r["consent_text_sha256"] == CONSENT["text_sha256"]
               for r in performers)
    assert "display_name" not in performers[0]  # only with --display-names

    metas = samples_meta(exported)
    by_take = {(m["take"]["take_id"], m["performer_id"]): m for m in metas.values()}
    for row in rows:
        for performer in [p for s, p in listed if s == row["session_id"]]:
            meta = by_take.get((row["take_id"], performer))
            if meta is None:
                continue
            assert meta["take"]["start_s"] == float(row["start_s"]) and meta["take"]["end_s"] == float(row["end_s"])
            assert meta["take"]["prompt_text"] == row["prompt_text"]
            assert meta["consent"] == CONSENT and "display_name" not in meta
            assert meta["audio"]["start_s"] == float(row["start_s"])


def test_a_prompt_belongs_to_the_take_it_was_pushed_for() -> None:
    """Pushed before the take, or just after its mark; one pushed late in a take (the operator
    preparing the next without a cut) is the next take's."""
    prompts = [{"t_s": t, "text": text, "target_emotion": None, "intensity": None}
               for t, text in ((0.5, "before the first"), (8.0, "late in the first"),
                               (20.0 + PROMPT_GRACE_S / 2, "just after the third's mark"))]
    markers = [{"t_s": t, "kind": "take", "label": None, "data": None} for t in (1.0, 10.0, 20.0)]
    takes = session_takes({"session_id": "ses_x", "duration_s": 30.0, "markers": markers, "prompts": prompts})
    assert [t.prompt_text for t in takes] == ["before the first", "late in the first",
                                              "just after the third's mark"]


def test_a_performer_without_media_in_a_take_has_no_sample(exported: Path) -> None:
    """p_late joined after B's first take: no sample there, silence before their join in the
    second, and their sync (arrival times) flagged."""
    metas = samples_meta(exported)
    assert f"{SESSION_B}_t001_p_late" not in metas and f"{SESSION_B}_t001_p_early" in metas
    index = json.loads((exported / "export.json").read_text())
    assert {"key": f"{SESSION_B}_t001_p_late", "performer_id": "p_late", "reason": "no media in this take",
            "session_id": SESSION_B, "take_id": f"{SESSION_B}_t001"} in index["left_out"]
    late = metas[f"{SESSION_B}_t002_p_late"]
    assert late["audio"]["silence_filled"][0][0] == late["take"]["start_s"]
    assert late["audio"]["silence_filled"][0][1] == pytest.approx(LATE_JOIN_S, abs=0.001)
    assert late["quality"]["av_offset"]["flagged"] and late["quality"]["av_offset"]["method"] == "arrival"
    assert {"key": late["key"], "flags": ["av_offset"]} in index["flagged"]
    # its clip opens on its first keyframe, after the take's start (nothing decodable before)
    assert late["video"]["first_frame_s"] == pytest.approx(LATE_JOIN_S, abs=0.001)


def test_a_performer_whose_media_ended_before_a_take_has_no_sample(tmp_path: Path) -> None:
    """Media 3 s long, a take marked at 5 s (the performer left): no sample, no clip of the
    frames before it, the take still listed."""
    session = tmp_path / "mirror" / "ses_20231115T000000Z_cccccc"
    write_session(session, performers=1, seconds=3.0, started_unix=STARTED, video_size=(160, 120))
    finalise_session(session)

    def change(manifest: dict[str, Any]) -> None:
        manifest["markers"] = [{"t_s": 5.0, "kind": "take", "label": "after", "data": None}]
        manifest["duration_s"] = 8.0
    rewrite_manifest(session, change)
    dest = tmp_path / "dataset"
    assert export(session.parent, dest, "--format", "lhotse")[0] == 0
    assert samples_meta(dest) == {}
    index = json.loads((dest / "export.json").read_text())
    assert [e["reason"] for e in index["left_out"]] == ["no media in this take"]
    assert len(list(csv.DictReader((dest / "takes.csv").read_text().splitlines()))) == 1


def test_the_high_quality_copy_is_used_where_it_covers(exported: Path) -> None:
    metas = samples_meta(exported)
    covered = metas[f"{SESSION_B}_t001_p_early"]  # [0.5, 2.5) inside the coverage
    assert covered["sources"] == {"video": "hq", "audio": [{"start_s": 0.5, "end_s": 2.5, "copy": "hq"}]}
    assert covered["video"]["width"] == 320 and set(covered["archive"]) == {"hq"}
    mixed = metas[f"{SESSION_B}_t002_p_early"]  # [3.2, 6.0): the copy ends at 4.5
    assert mixed["sources"] == {"video": "live", "audio": [
        {"start_s": 3.2, "end_s": HQ_COVERAGE[1], "copy": "hq"}, {"start_s": HQ_COVERAGE[1], "end_s": 6.0, "copy": "live"}]}
    assert mixed["video"]["width"] == 160 and set(mixed["archive"]) == {"hq", "live"}
    # the partial session's loss is in the flags of the sample that uses that video, only
    assert mixed["quality"]["gaps"]["flagged"] and mixed["quality"]["gaps"]["frames_lost"] == 12
    assert mixed["quality"]["gaps"]["gaps"] == [{"kind": "video", **LIVE_VIDEO_GAP}]
    assert not covered["quality"]["gaps"]["flagged"]


def test_the_copy_can_be_forced(archive: Path, tmp_path: Path) -> None:
    for copy in ("live", "hq"):
        dest = tmp_path / copy
        assert export(archive / SESSION_B, dest, "--format", "webdataset", "--copy", copy, "--no-vad")[0] == 0
        with tarfile.open(dest / "webdataset" / f"{SESSION_B}-0000.tar") as tar:
            metas = {m.name[:-5]: json.loads(tar.extractfile(m).read())  # type: ignore[union-attr]
                     for m in tar.getmembers() if m.name.endswith(".json")}
        late = metas[f"{SESSION_B}_t002_p_late"]["sources"]
        early = metas[f"{SESSION_B}_t002_p_early"]
        assert late["video"] == "live" and {s["copy"] for s in late["audio"]} == {"live"}
        assert early["sources"]["video"] == copy and [s["copy"] for s in early["sources"]["audio"]] == [copy]
        assert early["turns"] is None and "cross_talk" not in early["quality"]
        if copy == "hq":  # no copy for p_late: said; p_early's copy ends before the take does
            assert late["note"] == "no high-quality copy: the live copy is used"
            start, run = decoded_run(archive / SESSION_B / early["archive"]["hq"]["path"])
            assert early["audio"]["silence_filled"] == [[round((start + run.size) / RATE, 6), early["take"]["end_s"]]]


def test_wavs_are_sample_exact_against_the_archive(archive: Path, exported: Path) -> None:
    runs: dict[str, tuple[int, np.ndarray]] = {}
    for meta in samples_meta(exported).values():
        session = archive / meta["session_id"]
        for copy, entry in meta["archive"].items():
            runs.setdefault(entry["path"], decoded_run(session / entry["path"]))
        stretches = [(runs[meta["archive"][s["copy"]]["path"]], s["start_s"], s["end_s"])
                     for s in meta["sources"]["audio"]]
        first = int(round(meta["take"]["start_s"] * RATE))
        count = int(round(meta["take"]["end_s"] * RATE)) - first
        wav = read_wav((exported / "media" / meta["session_id"] / meta["audio"]["file"]).read_bytes())
        assert meta["audio"]["samples"] == wav.size == count
        expected = expected_wav(first, count, stretches)
        assert np.count_nonzero(expected) > count // 2
        assert np.array_equal(wav, expected), meta["key"]


def test_clips_are_stream_copies_opening_on_a_keyframe(archive: Path, exported: Path) -> None:
    for meta in samples_meta(exported).values():
        video = meta["video"]
        entry = meta["archive"][meta["sources"]["video"]]
        with av.open(str(archive / meta["session_id"] / entry["path"])) as container:
            stream = container.streams.video[0]
            source = [(float(p.pts * stream.time_base), bytes(p), p.is_keyframe)
                      for p in container.demux(stream) if p.pts is not None]
        keyframes = [t for t, _, key in source if key]
        after = [t for t in keyframes if video["in_s"] <= t < video["in_s"] + KEYFRAME_AFTER_S]
        before = [t for t in keyframes if t < video["in_s"]]
        opening = after[0] if after else before[-1] if before else min(t for t in keyframes if t >= video["in_s"])
        assert video["first_frame_s"] == pytest.approx(opening, abs=1e-6)
        assert video["keyframe_offset_s"] == pytest.approx(opening - video["in_s"], abs=1e-6)
        copied = [data for t, data, _ in source if opening - 1e-6 <= t < video["out_s"]]
        clip_path = exported / "media" / meta["session_id"] / video["file"]
        with av.open(str(clip_path)) as clip:
            stream = clip.streams.video[0]
            packets = [p for p in clip.demux(stream) if p.pts is not None]
            assert [bytes(p) for p in packets] == copied
            assert packets[0].pts == 0 and packets[0].is_keyframe
        with av.open(str(clip_path)) as clip:
            decoded = list(clip.decode(video=0))
        assert len(decoded) == video["frames"] == len(copied)
        assert (decoded[0].width, decoded[0].height) == (video["width"], video["height"])


# --- each format, loaded by its own library ----------------------------------------------------

def test_lhotse_loads_the_manifests(archive: Path, exported: Path) -> None:
    import lhotse

    recordings = lhotse.load_manifest(exported / "lhotse" / "recordings.jsonl.gz").with_path_prefix(exported)
    supervisions = lhotse.load_manifest(exported / "lhotse" / "supervisions.jsonl.gz")
    cuts = lhotse.load_manifest(exported / "lhotse" / "cuts.jsonl.gz").with_recording_path_prefix(str(exported))
    metas = samples_meta(exported)
    assert sorted(r.id for r in recordings) == sorted(metas) == sorted(c.id for c in cuts)
    for recording in recordings:
        meta = metas[recording.id]
        wav = read_wav((exported / "media" / meta["session_id"] / f"{recording.id}.wav").read_bytes())
        audio = recording.load_audio()
        assert audio.shape == (1, wav.size) and recording.sampling_rate == RATE
        assert np.array_equal(np.rint(audio[0] * 32768).astype(np.int16), wav)
    for supervision in supervisions:
        meta = metas[supervision.recording_id]
        assert supervision.speaker == meta["performer_id"]
        custom = supervision.custom
        assert (custom["take_id"], custom["prompt_text"], custom["target_emotion"], custom["intensity"]) == (
            meta["take"]["take_id"], meta["take"]["prompt_text"], meta["take"]["target_emotion"],
            meta["take"]["intensity"])
        assert (custom["consent_version"], custom["consent_sha256"]) == (CONSENT["version"], CONSENT["text_sha256"])
    for cut in cuts:
        meta = metas[cut.id]
        kinds = [s.custom["kind"] for s in cut.supervisions]
        assert kinds == ["take"] + ["turn"] * len(meta["turns"])
        turns = [t for s in cut.supervisions[1:] for t in (s.start, s.end)]
        start = meta["audio"]["start_s"]
        assert turns == pytest.approx([t - start for turn in meta["turns"] for t in turn], abs=1e-6)
        assert cut.load_audio().shape[1] == meta["audio"]["samples"]


def test_hf_datasets_loads_the_folder(exported: Path, tmp_path: Path) -> None:
    """datasets 5.2 encodes an Audio column with torchcodec (not a dependency) even to store a
    path, so the folder is loaded with its columns as the metadata gives them: file_name
    stays the path of the WAV, relative to the folder."""
    import datasets
    import pyarrow.json

    features = datasets.Features.from_arrow_schema(pyarrow.json.read_json(exported / "hf" / "metadata.jsonl").schema)
    loaded = datasets.load_dataset("audiofolder", data_dir=str(exported / "hf"), split="train",
                                   features=features, cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.column_names[0] == "file_name"
    metas = samples_meta(exported)
    assert len(loaded) == len(metas)
    for row in loaded:
        meta = metas[row["key"]]
        assert (row["session_id"], row["take_id"], row["performer_id"]) == (
            meta["session_id"], meta["take"]["take_id"], meta["performer_id"])
        assert (row["start_s"], row["end_s"], row["prompt_text"]) == (
            meta["take"]["start_s"], meta["take"]["end_s"], meta["take"]["prompt_text"])
        audio = exported / "hf" / row["file_name"]
        assert audio.read_bytes() == (exported / "media" / meta["session_id"] / f"{row['key']}.wav").read_bytes()
        assert row["turns"] == meta["turns"]
        assert row["flag_av_offset"] == meta["quality"]["av_offset"]["flagged"]
        assert json.loads(row["quality"]) == meta["quality"]
        if meta["video"]:
            assert (exported / "hf" / row["video"]).read_bytes() == (
                exported / "media" / meta["session_id"] / meta["video"]["file"]).read_bytes()


def test_webdataset_reads_every_sample_back(exported: Path) -> None:
    import webdataset

    shards = sorted(str(p) for p in (exported / "webdataset").glob("*.tar"))
    assert [Path(s).name for s in shards] == [f"{SESSION_A}-0000.tar", f"{SESSION_B}-0000.tar"]
    metas = samples_meta(exported)
    seen = []
    for item in webdataset.WebDataset(shards, shardshuffle=False, empty_check=False):
        key = item["__key__"]
        meta = metas[key]
        seen.append(key)
        assert json.loads(item["json"]) == meta
        media = exported / "media" / meta["session_id"]
        assert item["wav"] == (media / f"{key}.wav").read_bytes()
        assert item["webm"] == (media / f"{key}.webm").read_bytes()
    assert seen == list(metas)  # sample order: session, take, performer
    with tarfile.open(shards[0]) as tar:
        infos = tar.getmembers()
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {(0, 0, 0, "", "", 0o644)}


def test_rttm_lists_every_turn_and_uem_every_take(exported: Path) -> None:
    metas = samples_meta(exported)
    for session in (SESSION_A, SESSION_B):
        lines = (exported / "rttm" / f"{session}.rttm").read_text().splitlines()
        turns = sorted((start, meta["performer_id"], end) for meta in metas.values()
                       if meta["session_id"] == session for start, end in meta["turns"])
        assert lines == [f"SPEAKER {session} 1 {s:.3f} {e - s:.3f} <NA> <NA> {p} <NA> <NA>" for s, p, e in turns]
        assert turns
        takes = sorted({(m["take"]["start_s"], m["take"]["end_s"]) for m in metas.values() if m["session_id"] == session})
        assert (exported / "rttm" / f"{session}.uem").read_text().splitlines() == [
            f"{session} 1 {s:.3f} {e:.3f}" for s, e in takes]


# --- deterministic, incremental, revocable -----------------------------------------------------

def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def test_exports_are_deterministic_and_incremental(archive: Path, exported: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert export(archive, again, *ALL_FORMATS)[0] == 0
    assert tree(again) == tree(exported)
    index = json.loads((again / "export.json").read_text())
    assert set(index["files"]) | {"export.json"} == set(tree(again))
    for name, entry in index["files"].items():
        assert entry == {"bytes": (again / name).stat().st_size, "sha256": sha256_file(again / name)}
    mtimes = {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()}
    assert export(archive, again, *ALL_FORMATS)[0] == 0
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()} == mtimes  # nothing rewritten


def test_a_withdrawn_performer_is_gone_and_only_their_session_changes(
        archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "mirror"
    shutil.copytree(archive, src)
    dest = tmp_path / "dataset"
    assert export(src, dest, *ALL_FORMATS)[0] == 0
    before = tree(dest)
    mtimes = {name: (dest / name).stat().st_mtime_ns for name in before}
    assert withdraw_performer(src / SESSION_A, "p_synth1", "2023-11-15T00:00:00.000000Z", "asked")
    status, out, err = export(src, dest, *ALL_FORMATS, capsys=capsys)
    assert status == 0
    assert err.splitlines()[-1].startswith("export: 4/4 takes, 00:")  # --progress, not a terminal
    after = tree(dest)
    for name, data in after.items():
        assert "p_synth1" not in name
        assert b"p_synth1" not in (gzip.decompress(data) if name.endswith(".gz") else data), name
    rewritten = [n for n in after if mtimes.get(n) != (dest / n).stat().st_mtime_ns]
    removed = sorted(set(before) - set(after))
    assert removed and all("p_synth1" in n and SESSION_A in n for n in removed)
    assert not [n for n in rewritten if SESSION_B in n]  # the other session's files stay as they were
    assert f"webdataset/{SESSION_A}-0000.tar" in rewritten
    assert f"media/{SESSION_A}/{SESSION_A}_t001_p_synth0.wav" not in rewritten  # same sound, untouched
    assert all(after[n] == before[n] for n in after if n not in rewritten)
    # the run lists what it changed
    listed = out.split("rewritten: ")[1].split("removed: ")[0].split()[1:]
    assert sorted(listed) == sorted(rewritten)
    assert sorted(out.split("removed: ")[1].split("unchanged: ")[0].split()[1:]) == removed
    assert f"unchanged: {len(after) - len(rewritten)}" in out


# --- bad input ---------------------------------------------------------------------------------

def test_bad_input_is_refused_with_its_message(archive: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dataset"

    def refused(src: Path, message: str, target: Path = dest) -> None:
        status, _, err = export(src, target, "--format", "webdataset", capsys=capsys)
        assert (status, err.strip().splitlines()[-1]) == (2, f"export: {message}")

    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, f"{empty}: no session here (a session directory with manifest.json, a data dir "
                   "with sessions/, or a fetch mirror)")
    recording = tmp_path / "data" / "sessions" / "ses_recording"
    write_session(recording, performers=1, seconds=1, started_unix=STARTED, video_size=(64, 48))
    refused(tmp_path / "data", "ses_recording: still recording (a running recording, or an "
                               "interrupted one: `improv-capture recover` finalises it)")
    corrupt = tmp_path / "corrupt" / SESSION_A
    shutil.copytree(archive / SESSION_A, corrupt)
    media = corrupt / "performers" / "p_synth0.webm"
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 0xFF
    media.write_bytes(bytes(data))
    refused(corrupt, f"corrupt archive: {SESSION_A}/performers/p_synth0.webm: sha256 mismatch")
    media.unlink()
    refused(corrupt.parent, f"missing file: {SESSION_A}/performers/p_synth0.webm")
    afile = tmp_path / "a-file"
    afile.write_text("not a directory")
    refused(archive / SESSION_A, f"{afile}: is a file (DEST must be a directory)", afile)
    assert not dest.exists()  # a first export that failed leaves nothing


def test_a_failed_run_leaves_the_previous_export_as_it_was(archive: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dataset"
    assert export(archive / SESSION_A, dest, "--format", "webdataset")[0] == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in dest.rglob("*") if p.is_file()}
    # the next run fails when it moves its files into place: a directory stands where
    # performers.csv goes (made after the first run: it removes performers.csv first)
    os.rename(dest / "performers.csv", tmp_path / "performers.csv")
    (dest / "performers.csv").mkdir()
    status, _, err = export(archive, dest, "--format", "webdataset,rttm", capsys=capsys)
    assert status == 2 and "performers.csv: is a directory" in err
    (dest / "performers.csv").rmdir()
    os.rename(tmp_path / "performers.csv", dest / "performers.csv")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in dest.rglob("*") if p.is_file()} == before
    assert not (dest / ".export-tmp").exists()


def test_flagged_samples_left_out_names_shown_shards_bounded(archive: Path, tmp_path: Path) -> None:
    import webdataset

    dest = tmp_path / "dataset"
    bound_mb = 0.1  # smaller than any sample: each goes alone in its own shard, said in export.json
    assert export(archive / SESSION_B, dest, "--format", "webdataset", "--skip-flagged", "av_offset",
                  "--display-names", "--shard-max-mb", str(bound_mb))[0] == 0
    index = json.loads((dest / "export.json").read_text())
    assert {"key": f"{SESSION_B}_t002_p_late", "performer_id": "p_late", "reason": "flagged",
            "session_id": SESSION_B, "take_id": f"{SESSION_B}_t002", "flags": ["av_offset"]} in index["left_out"]
    shards = sorted(str(p) for p in (dest / "webdataset").glob("*.tar"))
    samples = list(webdataset.WebDataset(shards, shardshuffle=False, empty_check=False))
    keys = [s["__key__"] for s in samples]
    assert keys == [f"{SESSION_B}_t001_p_early", f"{SESSION_B}_t002_p_early"]  # p_late: none, then flagged
    assert index["webdataset"]["oversized"] == keys and len(shards) == len(keys)
    assert index["webdataset"]["shard_max_bytes"] == int(bound_mb * 2**20)
    names = {p["performer_id"]: p["display_name"] for p in manifest_of(archive / SESSION_B)["performers"]}
    assert all(json.loads(s["json"])["display_name"] == names["p_early"] for s in samples)
    table = (dest / "performers.csv").read_text().splitlines()
    assert table[0].split(",")[2] == "display_name" and names["p_late"] in table[2]  # still a performer


def test_failed_sessions_are_skipped_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failed = tmp_path / "mirror" / "ses_failed"
    failed.mkdir(parents=True)
    (failed / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "session_id": "ses_failed", "state": "failed", "reason": "disk full",
        "performers": [], "markers": [], "prompts": [], "files": [], "duration_s": 3.0}))
    status, out, _ = export(tmp_path / "mirror", tmp_path / "dataset", "--format", "hf", capsys=capsys)
    assert status == 0 and "note: ses_failed: skipped, state failed (disk full)" in out
    index = json.loads((tmp_path / "dataset" / "export.json").read_text())
    assert index["skipped_sessions"] == ["ses_failed: skipped, state failed (disk full)"]
    assert index["sessions"] == {}
