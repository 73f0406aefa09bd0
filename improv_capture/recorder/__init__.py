"""improv-capture recorder: writes, finalises, recovers and verifies session archives.

It must never import ``server``: archives are readable without the live server.
"""
