"""improv-capture server: HTTP API, signaling, rooms and the media relay."""
