"""The store: one async protocol (:mod:`streams.store.protocol`), an embedded
(SQLite, :mod:`streams.store.embedded`) and a Cassandra implementation
(:mod:`streams.store.cassandra`), which share the row mapping of
:mod:`streams.store.codec`.

:func:`open_store` is the only place that picks an implementation.
"""

from __future__ import annotations

from streams.settings import Settings
from streams.store.protocol import (
    BatchWrite,
    CampaignCounts,
    EventKey,
    Snapshot,
    Store,
    StoredDecision,
    StoredProposal,
)

__all__ = ["BatchWrite", "CampaignCounts", "EventKey", "Snapshot", "Store",
           "StoredDecision", "StoredProposal", "open_store"]


def open_store(settings: Settings, *, existing: bool = False) -> Store:
    """The store named by ``RELEVANZ_STORE_URL`` (not yet opened).

    ``existing=True`` is for readers: opening then refuses (:class:`ConfigError`)
    an embedded store whose file does not exist, instead of creating it empty.
    A Cassandra store is never created by opening it.
    """
    if settings.store_kind == "cassandra":
        from streams.store.cassandra import CassandraStore

        return CassandraStore(settings)
    from streams.store.embedded import EmbeddedStore

    return EmbeddedStore(settings.store_path, create=not existing)
