"""A headless performer: the reference client of the signaling protocol, and the test and
benchmark load. It publishes a wall-clock flash/beep pattern so that latency and sync can
be measured against the bot's own clock."""
