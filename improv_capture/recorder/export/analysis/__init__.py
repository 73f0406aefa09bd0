"""Analysis of one take's media for the export: speech turns (vad.py) and quality checks
(quality.py), pure numpy on 48 kHz mono samples and on packet lists; no archive access."""

from improv_capture.recorder.export.analysis.quality import (
    audio_level,
    cross_talk,
    frozen_video,
    silent_stretches,
)
from improv_capture.recorder.export.analysis.vad import speech_turns

__all__ = ["audio_level", "cross_talk", "frozen_video", "silent_stretches", "speech_turns"]
