"""Rooms as the operator API shows them (GET /api/v1/rooms, the console's `rooms` message):
performers with their consent, capture settings and live track counters, and the recording
state. A cluster's router merges the workers' answers as they are, so each worker's rooms
say which worker holds them."""

from __future__ import annotations

import time
from typing import Any

from improv_capture.rooms.hub import Hub
from improv_capture.rooms.model import LiveRecording, Member, Room


def describe_room(room: Room, hub: Hub) -> dict[str, Any]:
    worker_index = hub.settings.worker_index
    where: dict[str, Any] = {"worker": worker_index} if worker_index is not None else {}
    if hub.settings.redis_url is not None:  # one of several nodes: the room's
        where["node_id"] = hub.settings.node_id
    recording = room.recording
    return {
        **room.record(),
        **where,
        "profile": room.profile,
        "performers": [describe_member(member) for member in room.members.values()],
        "recording": describe_recording(recording) if recording is not None else None,
        "uploads": hub.uploads.of_room(room.room_id),
    }


def describe_member(member: Member) -> dict[str, Any]:
    tracks = {
        p.kind: {
            "packets": p.packets,
            "bytes": p.bytes,
            "keyframes": p.keyframes,
            "last_packet_age_s": (
                round(time.time() - p.last_packet_at, 3) if p.last_packet_at else None
            ),
        }
        for p in member.publications
    }
    return {
        "performer_id": member.performer_id,
        "display_name": member.display_name,
        "state": member.state,
        "consent": member.consent.__dict__ if member.consent else None,
        "capture": member.capture_settings,
        "publishing": sorted(tracks),
        "tracks": tracks,
        "receiving": member.subscriber.forward_stats() if member.subscriber else {},
    }


def describe_recording(recording: LiveRecording) -> dict[str, Any]:
    return {
        "session_id": recording.session_id,
        "started_at": recording.started_at,
        "elapsed_s": recording.now_s(),
        "markers": recording.manifest["markers"],
        "prompts": recording.manifest["prompts"],
    }
