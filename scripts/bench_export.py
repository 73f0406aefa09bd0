#!/usr/bin/env python
"""Benchmark: `improv-capture export --format webdataset` (with VAD) of 1 hour of
two-performer sessions (issue #13: at least 30x real time on the 2-core machine, memory
bounded by one take, not by the session).

The archive is synthetic, written by the live recorder's own writer and finalised
(improv_capture/recorder/synthetic.py): --sessions sessions of --session-min minutes, each
performer 640x480 VP8 (a loop of 60 noise frames, a keyframe every 2 s) and Opus at 50
packets/s, about 1.1 Mbit/s in all; each performer's Opus carries a speech-like voice of its
own (the bots' voice generator, tools/bot/voice.py: bursts of 0.3-2.5 s and pauses, a 60 s
cycle looped). Each session gets take markers about every --take-s seconds (seeded jitter of
+-10 %), each one frame before a keyframe of the stream (as the server's keyframe request at a
take marker makes it), and a prompt pushed just after each marker.

Each row is one run of the CLI in its own process, into an empty DEST: wall time, CPU time,
x real time (session seconds exported / wall seconds: the session clock counts once, however
many performers; the issue's "1 hour of two-performer sessions" is 3600 s), and the peak RSS
of that process (ru_maxrss, read by a small launcher process). Rows: the whole archive with
--take-s takes; the same with takes twice as long (markers rewritten, media unchanged); one
session alone with --take-s takes (its peak is the whole archive's: memory follows the take,
not the session or the export). Prints a Markdown table and the command.

Writing the archive takes about a minute and 1 GB: --cache DIR keeps it (and reuses it when
it is there for the same --sessions, --session-min and --seed).

Usage: .venv/bin/python scripts/bench_export.py [--sessions 6] [--session-min 10]
       [--take-s 60] [--cache DIR] [--no-vad-row]"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from improv_capture.recorder.finalise import finalise_session  # noqa: E402
from improv_capture.recorder.manifest import rewrite_manifest  # noqa: E402
from improv_capture.recorder.synthetic import write_session  # noqa: E402
from improv_capture.tools.bot.voice import AUDIO_RATE, CYCLE_S, voice_samples  # noqa: E402

PERFORMERS = 2
#: the synthetic sessions start here (fixed: the same options give the same archive)
STARTED_UNIX = 1_796_083_200.0  # 2026-12-01T00:00:00Z
#: a take marker lands this long before the keyframe that answers it (a frame at 30 fps)
MARK_BEFORE_KEYFRAME_S = 1 / 30
#: each take's prompt is pushed this long after its marker (a take carries the last prompt
#: pushed before it ended: one pushed before the next marker, with no cut, would be this one's)
PROMPT_AFTER_MARK_S = 0.5
EMOTIONS = ("anger", "joy", "fear", "sadness", "surprise", "disgust")
#: what makes a cached archive reusable
READY = "bench-export.json"


def session_id(n: int) -> str:
    return f"ses_20261201T{n:02d}0000Z_{0xbe0000 + n:06x}"


def video_keyframes(path: Path) -> list[float]:
    """Session times of the keyframes of a performer file (demuxed, not decoded)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(p.pts * stream.time_base) for p in container.demux(stream)
                if p.pts is not None and p.is_keyframe]


def build_archive(root: Path, sessions: int, minutes: float, seed: int) -> None:
    """``sessions`` finalised sessions of ``minutes`` each under ``root`` (a fetch mirror)."""
    seconds = minutes * 60
    for n in range(sessions):
        path = root / session_id(n)
        began = time.perf_counter()
        sounds = [voice_samples(seed + 10 * n + p, 0, CYCLE_S * AUDIO_RATE) for p in range(PERFORMERS)]
        write_session(path, PERFORMERS, seconds - 0.5, started_unix=STARTED_UNIX + n * 86400, sounds=sounds)
        manifest = finalise_session(path)
        print(f"built {path.name}: {manifest['state']}, {manifest['duration_s']:.0f} s, "
              f"{sum(f['bytes'] for f in manifest['files']) / 1e6:.0f} MB in "
              f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
    (root / READY).write_text(json.dumps({"sessions": sessions, "minutes": minutes, "seed": seed}))


def set_takes(session: Path, take_s: float, seed: int) -> float:
    """Rewrite the session's markers and prompts for takes of about ``take_s`` (the media stay
    as they are; the manifest's revision grows). Returns the longest take, in seconds."""
    manifest = json.loads((session / "manifest.json").read_text())
    performer = manifest["performers"][0]
    keyframes = video_keyframes(session / performer["file"]["path"])
    duration = float(manifest["duration_s"])
    rng = random.Random(f"{seed}-{session.name}-{take_s}")
    markers, prompts = [], []
    at = keyframes[0] + 1.0
    while at < duration - take_s / 2:
        keyframe = min((k for k in keyframes if k >= at), default=None)
        if keyframe is None:
            break
        mark = round(keyframe - MARK_BEFORE_KEYFRAME_S, 6)
        n = len(markers) + 1
        markers.append({"t_s": mark, "kind": "take", "label": f"take {n}", "data": None})
        prompts.append({"t_s": round(mark + PROMPT_AFTER_MARK_S, 6), "text": f"Scene {n}",
                        "target_emotion": rng.choice(EMOTIONS), "intensity": rng.randint(1, 5)})
        at = mark + take_s * rng.uniform(0.9, 1.1)

    def change(m: dict[str, Any]) -> None:
        m["markers"], m["prompts"] = markers, prompts
    rewrite_manifest(session, change)
    ends = [m["t_s"] for m in markers[1:]] + [duration]
    return max(end - m["t_s"] for m, end in zip(markers, ends))


#: Runs its arguments as a Python process and prints that process's exit code, CPU time and
#: peak RSS. A child's peak RSS (ru_maxrss) starts from its parent's RSS at the fork (Linux
#: carries it across exec), so the export is started from this small process, not from the
#: benchmark (a few hundred MB by then).
LAUNCHER = """
import json, os, sys
pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[1:]], os.environ)
_, status, usage = os.wait4(pid, 0)
json.dump({"code": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime,
           "rss_mb": usage.ru_maxrss / 1024}, sys.stdout)
"""


def measured_run(*args: str) -> dict[str, float]:
    """``python ARGS`` in its own process: wall s, CPU s, peak RSS (MB)."""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - began
    result = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or result.get("code") != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return {"wall_s": wall, "cpu_s": result["cpu_s"], "rss_mb": result["rss_mb"]}


def export_run(src: Path, dest: Path, vad: bool) -> dict[str, float]:
    """One `improv-capture export` process into ``dest``: wall s, CPU s, peak RSS (MB)."""
    return measured_run("-m", "improv_capture.cli", "export", str(src), "--dest", str(dest),
                        "--format", "webdataset", "--quiet", *([] if vad else ["--no-vad"]))


def baseline_rss_mb() -> float:
    """Peak RSS of a process that only loads the export's modules (what every run starts
    from, before any media)."""
    return measured_run("-c", "import improv_capture.cli, improv_capture.recorder.export.run")["rss_mb"]


def exported(dest: Path) -> dict[str, Any]:
    index = json.loads((dest / "export.json").read_text())
    takes = samples = 0
    for session in index["sessions"].values():
        takes += session["takes"]
        samples += session["samples"]
    flags: dict[str, int] = {}
    for item in index["flagged"]:
        for name in item["flags"]:
            flags[name] = flags.get(name, 0) + 1
    shards = index["webdataset"]["shards"]
    return {"takes": takes, "samples": samples, "shards": len(shards), "flags": flags,
            "mb": sum((dest / s).stat().st_size for s in shards) / 1e6}


def session_seconds(src: Path) -> float:
    paths = [src] if (src / "manifest.json").is_file() else [p.parent for p in src.glob("*/manifest.json")]
    return sum(float(json.loads((p / "manifest.json").read_text())["duration_s"]) for p in paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--session-min", type=float, default=10.0, help="minutes per session")
    parser.add_argument("--take-s", type=float, default=60.0, help="take length (the second row doubles it)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, help="keep the synthetic archive here (reused when it matches)")
    parser.add_argument("--no-vad-row", action="store_true", help="add a row without VAD (--no-vad)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        src = args.cache or work / "mirror"
        wanted = {"sessions": args.sessions, "minutes": args.session_min, "seed": args.seed}
        ready = src / READY
        if not ready.is_file() or json.loads(ready.read_text()) != wanted:
            shutil.rmtree(src, ignore_errors=True)
            src.mkdir(parents=True)
            began = time.perf_counter()
            build_archive(src, args.sessions, args.session_min, args.seed)
            print(f"archive written in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        runs: list[tuple[str, Path, float, bool]] = [
            (f"{args.sessions} sessions, takes ~{args.take_s:.0f} s", src, args.take_s, True),
            (f"{args.sessions} sessions, takes ~{2 * args.take_s:.0f} s", src, 2 * args.take_s, True),
            (f"1 session, takes ~{args.take_s:.0f} s", src / session_id(0), args.take_s, True),
        ]
        if args.no_vad_row:
            runs.append((f"{args.sessions} sessions, takes ~{args.take_s:.0f} s, --no-vad", src,
                         args.take_s, False))
        baseline = baseline_rss_mb()
        rows: list[str] = []
        peaks: list[tuple[float, float]] = []
        for label, path, take_s, vad in runs:
            longest = {session.name: set_takes(session, take_s, args.seed)
                       for session in sorted(p.parent for p in src.glob("*/manifest.json"))}
            longest_s = longest.get(path.name) or max(longest.values())
            dest = work / "dest"
            shutil.rmtree(dest, ignore_errors=True)
            measured = export_run(path, dest, vad)
            out = exported(dest)
            media = session_seconds(path)
            flags = ", ".join(f"{k} {v}" for k, v in sorted(out["flags"].items())) or "none"
            peaks.append((longest_s, measured["rss_mb"]))
            rows.append(
                f"| {label} | {media:.0f} s x {PERFORMERS} | {out['takes']} / {out['samples']} "
                f"| {longest_s:.0f} s | {measured['wall_s']:.1f} s | {measured['cpu_s']:.1f} s "
                f"| **{media / measured['wall_s']:.0f}x** | {measured['rss_mb']:.0f} MB "
                f"| {out['shards']} shards, {out['mb'] / 1000:.2f} GB | {flags} |")
            print(rows[-1], file=sys.stderr)
            shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| run | session time x performers | takes / samples | longest take | wall | CPU | x real time "
          "| peak RSS | output | flagged samples |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    (short, low), (long, high) = peaks[0], peaks[1]
    print(f"\nA process that only loads the export's modules peaks at {baseline:.0f} MB. From the "
          f"first two rows, the peak grows by {(high - low) / (long - short):.2f} MB per second of "
          "the longest take.")
    extra = (f" --cache {args.cache}" if args.cache else "") + (" --no-vad-row" if args.no_vad_row else "")
    print(f"\n`.venv/bin/python scripts/bench_export.py --sessions {args.sessions} --session-min "
          f"{args.session_min:g} --take-s {args.take_s:g}{extra}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
