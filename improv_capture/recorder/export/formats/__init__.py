"""The export's formats, each a writer of its own files under DEST (docs/export.md): tables.py
(takes.csv and performers.csv, always), lhotse.py, hf.py, webdataset.py, rttm.py; base.py is
what they share."""
