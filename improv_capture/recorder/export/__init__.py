"""Dataset export (`improv-capture export`, docs/export.md): session archives cut into takes,
one sample per performer per take, written in the formats training pipelines load.

It reads archives only (no server): run.py drives source.py (which sessions, are they whole),
takes.py (where takes begin and end), audio.py and video.py (the media of a take), samples.py
and flags.py (what is said about each sample), formats/ (the files) and writer.py (how they
reach DEST: atomically, deterministically, only what changed)."""

from __future__ import annotations


class ExportError(Exception):
    """Why an export cannot go on: the CLI prints it as one line and exits 2; nothing of the
    run is left in DEST."""
