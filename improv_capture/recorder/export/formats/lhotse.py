"""lhotse manifests: one Recording per sample (its WAV under media/), a supervision for the
take and one per speech turn (speaker = performer), and one MonoCut per recording with its
supervisions. Written as lhotse serialises them (lhotse itself is not needed to export).

Paths are relative to DEST (an absolute path would differ between two DESTs of the same
export): load with ``lhotse.load_manifest(DEST / "lhotse/recordings.jsonl.gz")
.with_path_prefix(DEST)``, or from DEST as the working directory."""

from __future__ import annotations

from typing import Any

from improv_capture.recorder.export.formats.base import (
    ExportFormat,
    JsonlFile,
    SampleFiles,
    media_path,
)
from improv_capture.recorder.hq.align import RATE

MEDIA_DIR = "media"
DIR = "lhotse"


def _seconds(value: float) -> float:
    return round(value, 6) + 0.0


class LhotseFormat(ExportFormat):
    name = "lhotse"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # each row is written as its sample is added (none is held)
        self.recordings = JsonlFile(self.staging, f"{DIR}/recordings.jsonl.gz")
        self.supervisions = JsonlFile(self.staging, f"{DIR}/supervisions.jsonl.gz")
        self.cuts = JsonlFile(self.staging, f"{DIR}/cuts.jsonl.gz")

    def add(self, files: SampleFiles) -> None:
        sample, meta = files.sample, files.meta
        session_id = sample.session.session_id
        wav = media_path(MEDIA_DIR, session_id, f"{files.key}.wav")
        self.staging.put(wav, files.wav)
        self.staging.put(media_path(MEDIA_DIR, session_id, f"{files.key}.json"), files.json)
        video = None
        if files.webm is not None:
            video = media_path(MEDIA_DIR, session_id, f"{files.key}.webm")
            self.staging.put(video, files.webm)
        samples = int(sample.pcm.size)
        duration = samples / RATE
        recording = {"id": files.key, "sources": [{"type": "file", "channels": [0], "source": wav}],
                     "sampling_rate": RATE, "num_samples": samples, "duration": duration,
                     "channel_ids": [0]}
        take = meta["take"]
        common = {"session_id": session_id, "take_id": take["take_id"],
                  "prompt_text": take["prompt_text"], "target_emotion": take["target_emotion"],
                  "intensity": take["intensity"], "consent_version": meta["consent"]["version"],
                  "consent_sha256": meta["consent"]["text_sha256"]}
        if self.display_names:
            common["display_name"] = meta.get("display_name")
        supervisions = [self._supervision(f"{files.key}_take", files.key, 0.0, duration, sample.performer_id,
                                          {**common, "kind": "take", "video": video, "flags": sample.flagged})]
        for n, (start, end) in enumerate(sample.turns or [], 1):
            supervisions.append(self._supervision(f"{files.key}_turn{n:03d}", files.key, start, end - start,
                                                  sample.performer_id, {**common, "kind": "turn"}))
        self.recordings.write(recording)
        for supervision in supervisions:
            self.supervisions.write(supervision)
        self.cuts.write({"id": files.key, "start": 0.0, "duration": duration, "channel": 0,
                         "supervisions": supervisions, "recording": recording, "type": "MonoCut"})

    @staticmethod
    def _supervision(sid: str, recording: str, start: float, duration: float, speaker: str,
                     custom: dict[str, Any]) -> dict[str, Any]:
        return {"id": sid, "recording_id": recording, "start": _seconds(start),
                "duration": _seconds(duration), "channel": 0, "speaker": speaker, "custom": custom}

    def finish(self) -> None:
        for manifest in (self.recordings, self.supervisions, self.cuts):
            manifest.close()
