"""Every network test gets the fixtures of the one namespace harness (tests/netns.py): `hosts`
(a network of its own), and `network` and `shared_server` (one for the whole module)."""

from tests.netns import hosts_fixture, module_network_fixture, shared_server_fixture  # noqa: F401 - fixtures
