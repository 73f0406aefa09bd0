"""improv-capture recorder: writes, finalises, recovers and verifies session archives.

It imports nothing of the package but clock, errors and db: archives are readable without the
live server.
"""
