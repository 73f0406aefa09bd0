"""What a room's media is built from: the connection a performer publishes on and the
recording that writes the room. The product passes media through undecoded and records it by
stream copy; scripts/bench_rooms.py's decode-and-re-encode baseline plugs its own classes in
here (improv_capture/bench/transcode_baseline.py), chosen once, by the app factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from improv_capture.media.connections import PublishConnection
from improv_capture.media.relay import Publication
from improv_capture.rooms.model import Room
from improv_capture.rooms.recording import Recording
from improv_capture.settings import Settings


@dataclass(frozen=True)
class MediaFactory:
    publish_connection_class: type[PublishConnection] = PublishConnection
    recording_class: type[Recording] = Recording

    def publish_connection(
        self,
        settings: Settings,
        performer_id: str,
        on_publication: Callable[[Publication], None],
    ) -> PublishConnection:
        capacity = {"audio": settings.relay_audio_queue, "video": settings.relay_video_queue}
        return self.publish_connection_class(
            performer_id,
            settings.ice_servers,
            capacity,
            settings.pli_interval_s,
            on_publication=on_publication,
        )

    def recording(self, settings: Settings, room: Room) -> Recording:
        return self.recording_class(room, settings.sessions_dir, settings.recorder_queue)


#: the product: relay and recorder never decode
PASSTHROUGH = MediaFactory()
