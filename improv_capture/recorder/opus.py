"""The one fact about an Opus packet the recorder needs: how long it plays (RFC 6716 3.1)."""

from __future__ import annotations

#: Frame length of each TOC configuration, in 48 kHz samples: SILK 10/20/40/60 ms (0-11),
#: hybrid 10/20 ms (12-15), CELT 2.5/5/10/20 ms (16-31).
_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4
)


def packet_samples(data: bytes) -> int | None:
    """48 kHz samples the packet holds (frame length x frames); None if it is malformed."""
    if not data:
        return None
    toc = data[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    elif len(data) >= 2 and data[1] & 0x3F:
        frames = data[1] & 0x3F
    else:
        return None
    return _FRAME_SAMPLES[toc >> 3] * frames
