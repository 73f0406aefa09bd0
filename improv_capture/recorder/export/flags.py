"""A sample's quality flags: sync and gaps from the manifest (what the recorder knew), level,
silence, frozen pictures and cross-talk measured on the take's media by the analysis module.
Each flag is ``{measured values..., "flagged": bool}``; an export may leave flagged samples out
(``--skip-flagged``)."""

from __future__ import annotations

from typing import Any

from improv_capture.recorder.export.analysis import (
    audio_level,
    cross_talk,
    frozen_video,
    silent_stretches,
    speech_turns,
)
from improv_capture.recorder.export.samples import Sample
from improv_capture.recorder.hq.align import RATE

#: Every flag a sample can carry, in the order docs/export.md lists them (``--skip-flagged``
#: takes these names).
FLAG_NAMES = ("av_offset", "gaps", "audio_level", "silent_stretches", "frozen_video", "cross_talk")
#: Placed by the senders' own clocks (RTCP sender reports): audio and video of a performer in
#: sync as their browser captured them. Anything else (arrival times) may be off.
TRUSTED_SYNC = "sender_reports"
#: A high-quality copy placed by measuring it against the live copy; the page's clock alone
#: may be off by its network's delay.
TRUSTED_ALIGNMENT = "cross-correlation"


def av_offset(sample: Sample) -> dict[str, Any]:
    """How the performer's audio and video were put on the session clock."""
    performer = sample.performer
    if sample.sources.video == "hq":
        alignment = (performer.get("hq") or {}).get("alignment") or {}
        parts = [{"part": p.get("part"),
                  "audio_offset_s": (p.get("audio") or {}).get("offset_s"),
                  "video_offset_s": (p.get("video") or {}).get("offset_s"),
                  "audio_method": (p.get("audio") or {}).get("method"),
                  "video_method": (p.get("video") or {}).get("method")}
                 for p in alignment.get("parts") or []]
        return {"copy": "hq", "method": alignment.get("method"), "parts": parts,
                "flagged": alignment.get("method") != TRUSTED_ALIGNMENT}
    sync = performer.get("sync") or {}
    return {"copy": "live", "method": sync.get("method"), "offset_s": sync.get("offset_s"),
            "rtt_s": sync.get("rtt_s"), "flagged": sync.get("method") != TRUSTED_SYNC}


def gaps(sample: Sample) -> dict[str, Any]:
    """The live copy's gaps (manifest) that overlap the take where the live copy was used."""
    live_audio = [(a, b) for a, b, c in sample.sources.audio if c == "live"]
    live_video = [(sample.take.start_s, sample.take.end_s)] if sample.sources.video == "live" else []
    found = []
    for track in sample.performer.get("tracks") or []:
        used = live_audio if track["kind"] == "audio" else live_video
        for gap in track.get("gaps") or []:
            if any(gap["start_s"] < b and gap["end_s"] > a for a, b in used):
                found.append({"kind": track["kind"], **gap})
    found.sort(key=lambda g: (g["start_s"], g["kind"]))
    filled = sum(b - a for a, b in sample.silence) / RATE
    return {"gaps": found, "frames_lost": sum(int(g.get("dropped_frames") or 0) for g in found),
            "silence_filled_s": round(filled, 6), "flagged": bool(found)}


def measure(sample: Sample, vad: bool) -> None:
    """Turns (with VAD) and every flag of one sample but cross-talk, which needs the take's
    other performers (:func:`take_cross_talk`)."""
    sample.turns = speech_turns(sample.pcm) if vad else None
    quality: dict[str, Any] = {
        "av_offset": av_offset(sample),
        "gaps": gaps(sample),
        "audio_level": audio_level(sample.pcm, sample.turns),
        "silent_stretches": silent_stretches(sample.pcm),
    }
    if sample.has_video_track:
        frames = sample.clip.take_frames() if sample.clip else []
        quality["frozen_video"] = frozen_video(frames, sample.take.start_s, sample.take.end_s)
    sample.quality = quality


def take_cross_talk(samples: list[Sample]) -> None:
    """Each performer's microphone checked for the others' voices (VAD turns needed). All
    samples of a take start at the same session sample; a performer alone is not checked."""
    if len(samples) < 2 or any(s.turns is None for s in samples):
        return
    found = cross_talk({s.performer_id: s.pcm for s in samples},
                       {s.performer_id: s.turns or [] for s in samples})
    for sample in samples:
        others = found.get(sample.performer_id, {})
        sample.quality["cross_talk"] = {"from": others,
                                        "flagged": any(v.get("flagged") for v in others.values())}
