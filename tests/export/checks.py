"""What the export tests check on an exported DEST against the archive it came from."""

from __future__ import annotations

import functools
import json
import subprocess
import wave
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np

from tests.helpers import REPO, cli

RATE = 48000


def export(src: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli() + ["export", str(src), "--dest", str(dest), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def sample_metas(dest: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((dest / "media").glob("*/*.json"))}


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


@functools.lru_cache(maxsize=8)
def decoded_sound(path: Path) -> np.ndarray:
    """Every decoded audio frame of an archive file, end to end, as s16 (what a player hears,
    without the timeline); kept for the file's next sample (a file is read-only here)."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)]
    return np.clip(np.rint(np.concatenate(frames) * 32768), -32768, 32767).astype(np.int16)


def position(probe: np.ndarray, sound: np.ndarray) -> int | None:
    """Where ``probe`` lies in ``sound``, sample for sample (None: nowhere)."""
    where = np.flatnonzero(sound[: sound.size - probe.size + 1] == probe[0])
    for offset in range(1, probe.size):
        where = where[sound[where + offset] == probe[offset]]
        if where.size <= 1:
            break
    if where.size and np.array_equal(sound[where[0] : where[0] + probe.size], probe):
        return int(where[0])
    return None


#: a piece of the WAV looked up in the decoded sound: long enough to be found in one place only
PROBE = 480


def unmatched(wav: np.ndarray, sound: np.ndarray, meta: dict[str, Any]) -> int:
    """How many samples of the WAV outside the silences the export filled (``silence_filled``:
    before the performer's media, across gaps) are not the archive's decoded sound, sample for
    sample. The WAV is read as pieces, each the decoded sound run on from where it is found;
    a piece ends where the recorder's stamps stepped (a frame placed a few ms off the one
    before: the sound goes on from elsewhere in the decoded run) and the next is looked up.
    A stretch between two filled silences shorter than PROBE is not looked up."""
    start = meta["audio"]["start_s"]
    filled = np.zeros(wav.size, bool)
    for a, b in meta["audio"]["silence_filled"]:
        filled[round((a - start) * RATE) : round((b - start) * RATE)] = True
    missing, i = 0, 0
    while i < wav.size:
        if filled[i]:
            i += 1
            continue
        end = i + int(np.argmax(filled[i:])) if filled[i:].any() else wav.size
        if end - i < PROBE:  # too short to be placed beyond doubt (between two filled gaps)
            i = end
            continue
        at = position(wav[i : i + PROBE], sound)
        if at is None:
            missing += PROBE // 10
            i += PROBE // 10
            continue
        length = min(end - i, sound.size - at)
        same = sound[at : at + length] == wav[i : i + length]
        i += length if same.all() else int(np.argmin(same))
    return missing
