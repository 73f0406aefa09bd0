"""High-quality copies of studio sessions, on the recorder's side: the uploaded chunks
(uploads.py), measuring where a copy sits on the session timeline (align.py), and writing it
into the finalised session (place.py). Docs: docs/archive-format.md, "High-quality copies"."""
