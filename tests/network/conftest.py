"""Every network test gets the `hosts` fixture of the one namespace harness (tests/netns.py)."""

from tests.netns import hosts_fixture  # noqa: F401
