"""Several server nodes coordinated through Redis (issue #14): the foundation.

Each node reports its headroom with a heartbeat (registry.py), rooms are placed on the node
with the most headroom and their owner is recorded in Redis (placement.py), and operator
actions reach a room's owner through a Redis stream per node (bus.py). Nothing here is wired
into the server yet; these modules only need redis-py (`redis.asyncio`).
"""
