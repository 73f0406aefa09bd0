"""Takes from the operator's markers, on the session clock (docs/export.md, "Takes").

A ``take`` or ``scene`` marker opens a take (closing the one open), ``cut`` closes it, the
session's end closes the last; a session without take or scene markers is one take. Each take
carries the prompt on the performers' screens as it started: the last one pushed before its
start, or up to PROMPT_GRACE_S after it (an operator who marks the take, then pushes its
prompt); a prompt stays on the screens until the next replaces it, across takes. A prompt
pushed later in a take belongs to the next one (an operator preparing it without a cut)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

OPENING_KINDS = ("take", "scene")
CLOSING_KINDS = ("cut",)
#: marker_kind of the one take of a session without take or scene markers
WHOLE_SESSION = "session"
#: a prompt pushed this soon after a take's start is that take's (mark, then push)
PROMPT_GRACE_S = 2.0


@dataclass(frozen=True)
class Take:
    take_id: str
    session_id: str
    index: int
    start_s: float
    end_s: float
    label: str | None
    marker_kind: str
    prompt_text: str | None
    target_emotion: str | None
    intensity: float | int | None
    prompt_t_s: float | None

    def fields(self) -> dict[str, Any]:
        return asdict(self)


def take_id(session_id: str, index: int) -> str:
    return f"{session_id}_t{index:03d}"


def _spans(markers: list[dict[str, Any]], duration_s: float) -> list[tuple[float, float, dict[str, Any] | None]]:
    """(start, end, opening marker) of each take, in time order; empty ones left out."""
    ordered = sorted((m for m in markers if m.get("kind") in OPENING_KINDS + CLOSING_KINDS),
                     key=lambda m: float(m["t_s"]))  # stable: same-time markers keep their order
    if not any(m["kind"] in OPENING_KINDS for m in ordered):
        return [(0.0, duration_s, None)]
    spans = []
    open_marker: dict[str, Any] | None = None
    for marker in ordered:
        t = min(max(float(marker["t_s"]), 0.0), duration_s)
        if open_marker is not None:
            spans.append((min(max(float(open_marker["t_s"]), 0.0), duration_s), t, open_marker))
            open_marker = None
        if marker["kind"] in OPENING_KINDS:
            open_marker = marker
    if open_marker is not None:
        spans.append((min(max(float(open_marker["t_s"]), 0.0), duration_s), duration_s, open_marker))
    return [(start, end, m) for start, end, m in spans if end > start]


def session_takes(manifest: dict[str, Any]) -> list[Take]:
    session_id = str(manifest["session_id"])
    duration = float(manifest.get("duration_s") or 0.0)
    prompts = sorted(manifest.get("prompts") or [], key=lambda p: float(p["t_s"]))
    takes: list[Take] = []
    for index, (start, end, marker) in enumerate(_spans(manifest.get("markers") or [], duration), 1):
        chosen = None
        for prompt in prompts:  # the last one pushed before the start, or just after it
            if float(prompt["t_s"]) < min(start + PROMPT_GRACE_S, end):
                chosen = prompt
        takes.append(Take(
            take_id=take_id(session_id, index), session_id=session_id, index=index,
            start_s=round(start, 6), end_s=round(end, 6),
            label=marker.get("label") if marker else None,
            marker_kind=marker["kind"] if marker else WHOLE_SESSION,
            prompt_text=chosen.get("text") if chosen else None,
            target_emotion=chosen.get("target_emotion") if chosen else None,
            intensity=chosen.get("intensity") if chosen else None,
            prompt_t_s=float(chosen["t_s"]) if chosen else None,
        ))
    return takes
