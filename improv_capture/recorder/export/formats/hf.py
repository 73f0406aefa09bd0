"""A Hugging Face ``audiofolder``: ``hf/metadata.jsonl`` (one row per sample, ``file_name``
first) beside the WAVs and WebMs under ``hf/<session_id>/``, so that
``datasets.load_dataset("audiofolder", data_dir=DEST / "hf")`` loads it and the folder can be
uploaded as it is. The files are the same bytes as media/ (hard links when both formats are
written)."""

from __future__ import annotations

from typing import Any

from improv_capture.recorder.export.flags import FLAG_NAMES
from improv_capture.recorder.export.formats.base import (
    ExportFormat,
    JsonlFile,
    SampleFiles,
    canonical_json,
    media_path,
)

DIR = "hf"


class HfFormat(ExportFormat):
    name = "hf"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # a row is written as its sample is added (none is held); file_name first
        self.metadata = JsonlFile(self.staging, f"{DIR}/metadata.jsonl", sort_keys=False)

    def add(self, files: SampleFiles) -> None:
        sample, meta = files.sample, files.meta
        session_id = sample.session.session_id
        wav = media_path(DIR, session_id, f"{files.key}.wav")
        self.staging.put(wav, files.wav)
        video = None
        if files.webm is not None:
            video = media_path(DIR, session_id, f"{files.key}.webm")
            self.staging.put(video, files.webm)
        take = meta["take"]
        row: dict[str, Any] = {
            "file_name": wav.removeprefix(f"{DIR}/"), "key": files.key, "session_id": session_id,
            "take_id": take["take_id"], "performer_id": sample.performer_id,
            "start_s": meta["audio"]["start_s"], "end_s": meta["audio"]["end_s"],
            "prompt_text": take["prompt_text"], "target_emotion": take["target_emotion"],
            "intensity": None if take["intensity"] is None else float(take["intensity"]),
            "consent_version": meta["consent"]["version"], "consent_sha256": meta["consent"]["text_sha256"],
            "video": video.removeprefix(f"{DIR}/") if video else None,
            "turns": meta["turns"],
            # one column per flag (null when not measured), the measures as JSON text: a struct
            # column would take its fields from performer ids (cross-talk)
            **{f"flag_{name}": (meta["quality"][name]["flagged"] if name in meta["quality"] else None)
               for name in FLAG_NAMES},
            "quality": canonical_json(meta["quality"]),
        }
        if self.display_names:
            row["display_name"] = meta.get("display_name")
        self.metadata.write(row)

    def finish(self) -> None:
        self.metadata.close()
