"""The store: one async protocol, an embedded implementation (and Cassandra to come).

The store holds projections of the topics, so everything in it can be rebuilt
by replay.  Today it keeps the event ledger that makes processing idempotent
by ``event_id``; customer state joins it with the customer-state work.  All
implementations share one contract test suite (``tests/integration/
test_store_contract.py``).

:func:`open_store` is the only place that picks an implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from streams.settings import Settings

#: ``(partition key, event_id)``: the partition key is the customer id, or the
#: content id for catalogue events.
EventKey = tuple[str, str]


class Store(Protocol):
    """What the agents need from persistent state."""

    async def open(self) -> None:
        """Connect and make sure the schema exists."""

    async def close(self) -> None:
        """Flush and release every resource."""

    async def seen_events(self, keys: Sequence[EventKey], now: datetime) -> set[EventKey]:
        """Those of ``keys`` already recorded and not yet expired at ``now``."""

    async def record_events(
        self, keys: Sequence[EventKey], now: datetime, ttl_s: float
    ) -> None:
        """Remember ``keys`` until ``now + ttl_s`` (an upsert: recording twice is harmless)."""


def open_store(settings: Settings) -> Store:
    """The store named by ``RELEVANZ_STORE_URL`` (not yet opened)."""
    from streams.store.embedded import EmbeddedStore

    return EmbeddedStore(settings.store_path)
