"""A Redis channel layer whose connection pool is bounded: callers wait for a connection instead of opening more.

channels_redis opens a connection per concurrent command and never closes
them while the event loop runs: 10,000 sockets closing at once made one
daphne's pool grow to about 9,000 connections, Redis refused 465 others (it
is also the Celery broker), and the ``group_discard`` calls that failed left
11,316 dead members in one user's group. Here every event loop's pool is a
:class:`redis.asyncio.BlockingConnectionPool`: at most ``max_connections``
connections, and a command that finds none free waits up to ``pool_timeout``
seconds for one (then ``redis.exceptions.ConnectionError``).

Settings, beside channels_redis' own ``CONFIG`` keys::

    CHANNEL_LAYERS = {"default": {
        "BACKEND": "delivery.layers.BoundedRedisChannelLayer",
        "CONFIG": {"hosts": ["redis://..."], "max_connections": 50, "pool_timeout": 10},
    }}

A host given as a dict is passed to the pool as keyword arguments, as
channels_redis does; Sentinel hosts are not supported by this class.
"""

from __future__ import annotations

from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool

#: Defaults: connections per event loop, and seconds a command waits for one.
MAX_CONNECTIONS = 50
POOL_TIMEOUT = 10.0


class BoundedRedisChannelLayer(RedisChannelLayer):
    """channels_redis' :class:`RedisChannelLayer` with at most ``max_connections`` connections per event loop
    and shard; a command waits up to ``pool_timeout`` seconds for a free one. Raises ``ValueError`` for a
    non-positive bound."""

    def __init__(
        self, *args: Any, max_connections: int = MAX_CONNECTIONS, pool_timeout: float = POOL_TIMEOUT, **kwargs: Any
    ) -> None:
        if int(max_connections) < 1 or float(pool_timeout) <= 0:
            raise ValueError("max_connections must be at least 1 and pool_timeout positive (seconds).")
        self.max_connections = int(max_connections)
        self.pool_timeout = float(pool_timeout)
        super().__init__(*args, **kwargs)

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        if "master_name" in host:
            raise ValueError("BoundedRedisChannelLayer does not support Sentinel hosts; use RedisChannelLayer.")
        host.update(max_connections=self.max_connections, timeout=self.pool_timeout)
        if "address" in host:
            return BlockingConnectionPool.from_url(host.pop("address"), **host)
        return BlockingConnectionPool(**host)
