"""The store: one async protocol, an embedded (SQLite) and a Cassandra implementation.

This module holds the protocol and the row types it passes; the
implementations import them from here, and :mod:`streams.store` offers them
with :func:`~streams.store.open_store`.

The store holds projections of the topics, so everything in it can be rebuilt
by replay: per customer the :class:`~agents.core.customer.CustomerState`
(profile, consent, interests, tags, interaction history), the event ledger
that makes processing idempotent by ``event_id``, and model snapshots.  Both
implementations share one contract test suite (``tests/integration/
test_store_contract.py``), so the semantics below hold for both:

- **One partition per customer.** Every customer table is keyed by
  ``customer_id`` first; the Cassandra schema is ``schemas/cassandra.cql`` and
  the embedded store mirrors its tables and columns.
- **Replace, not merge.** :meth:`Store.write_batch` makes each given state
  *the* stored state: consent, interests, tags and history entries missing
  from it are removed.  Saving the same state twice changes nothing.
- **Millisecond UTC times.** Cassandra keeps timestamps in milliseconds, so
  both stores drop sub-millisecond parts (flooring) and every time comes back
  timezone-aware in UTC: a saved state loads as :func:`streams.store.codec.
  normalise` of it.
- **TTLs are logical.** A history entry lives ``history_ttl_s`` past its
  event time as counted from the customer's latest event (for live traffic
  ``occurred_at + history_ttl_s``; a backfill of old events is kept as live
  traffic would have kept it: :func:`streams.store.codec.history_expiry`),
  a ledger entry until ``now + ttl_s``; reads hide expired
  rows by comparing with the ``now`` they are given (so time stays a
  parameter), and the expired rows are physically removed by Cassandra's TTL or
  by the embedded store's :meth:`Store.purge_expired`.
- **The outbox.** A batch's outputs are stored with its states, under one of
  its ledger keys, until the producer has delivered them
  (:meth:`Store.mark_published`).  A worker that dies in between leaves them
  there; when the batch is redelivered, that key is seen again and
  :meth:`Store.unpublished` gives them back to publish.
- **Visitors.** An anonymous visitor is one row (:mod:`streams.store.visitor_rows`),
  replaced whole, kept until the expiry it is saved with (event time of its
  latest page view plus ``RELEVANZ_VISITOR_EXPIRY_S``) and hidden by reads
  after that; deleting a visitor deletes its ledger and outbox entries too.
- **Errors** are :class:`streams.errors.StoreUnavailable` with a message
  naming the store and the operation.

:func:`streams.store.open_store` is the only place that picks an implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from agents.core.customer import CustomerState
from agents.core.uplift import CampaignCounts as CampaignCounts  # the core's type, stored
from agents.core.visitors import VisitorState

#: ``(partition key, event_id)``: the partition key is the customer id, or the
#: content id for catalogue events.
EventKey = tuple[str, str]


@dataclass(frozen=True)
class Snapshot:
    """One stored version of a model: opaque bytes and their checksum."""

    model_id: str
    version: int
    blob: bytes
    checksum: str
    created_at: datetime


@dataclass(frozen=True)
class BatchWrite:
    """What one batch writes to the store, as one value (:meth:`Store.write_batch`).

    It is built along the commit path: the ingest agent gives the ledger
    entries (``events``), the ``outbox`` entry and the ``published`` anchors;
    the customer stage adds the campaign counters (``stats``) and
    ``decisions``; the customer cache adds the changed ``states`` and what
    the store held of them before (``previous``).
    """

    #: States to store, each replacing the customer's stored state.
    states: Sequence[CustomerState] = ()
    #: Ledger entries: the events the batch applied.
    events: Sequence[EventKey] = ()
    #: Per customer, the state the store holds right now, where known exactly.
    previous: Mapping[str, CustomerState] | None = None
    #: Changes to the campaign counters.
    stats: Sequence[CampaignCounts] = ()
    #: Decisions kept for the customer view.
    decisions: Sequence[StoredDecision] = ()
    #: Ledger key (of ``events``) -> the batch's outputs, opaque bytes.
    outbox: Mapping[EventKey, bytes] | None = None
    #: Anchors whose outputs were delivered: their outbox entries are deleted.
    published: Sequence[EventKey] = ()

    @property
    def empty(self) -> bool:
        """True when there is nothing to write."""
        return not (self.states or self.events or self.stats or self.decisions
                    or self.outbox or self.published)


@dataclass(frozen=True)
class StoredProposal:
    """A send proposal awaiting (or past) an operator's decision.

    ``payload`` is the proposed trigger as the worker encoded it; the store
    does not read it.  ``status`` is ``proposed`` until it is approved,
    rejected or expired, exactly once (:meth:`Store.resolve_proposal`).
    """

    proposal_id: str
    customer_id: str
    campaign_id: str
    created_at: datetime
    expires_at: datetime
    status: str
    payload: bytes
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class StoredDecision:
    """A decision made for a customer, as published (``payload``: the record, msgpack)."""

    customer_id: str
    decided_at: datetime
    decision_id: str
    payload: bytes


class Store(Protocol):
    """What the agents need from persistent state."""

    async def open(self) -> None:
        """Connect; the schema must exist.

        The embedded store creates it (as :meth:`migrate` does); the Cassandra
        store raises :class:`~streams.errors.StoreUnavailable` telling the
        operator to run ``relevanz store migrate``.
        """

    async def close(self) -> None:
        """Flush and release every resource (closing twice is harmless)."""

    async def migrate(self) -> None:
        """Create or upgrade the schema; idempotent, works on an unopened store."""

    async def seen_events(self, keys: Sequence[EventKey], now: datetime) -> set[EventKey]:
        """Those of ``keys`` already recorded and not yet expired at ``now``."""

    async def record_events(
        self, keys: Sequence[EventKey], now: datetime, ttl_s: float
    ) -> None:
        """Remember ``keys`` until ``now + ttl_s`` (an upsert: recording twice is harmless)."""

    async def load_customers(
        self, customer_ids: Sequence[str], now: datetime
    ) -> dict[str, CustomerState]:
        """The stored states of ``customer_ids``; customers never saved are absent.

        History entries expired at ``now`` are left out.
        """

    async def write_batch(self, batch: BatchWrite, now: datetime, ledger_ttl_s: float,
                          history_ttl_s: float) -> None:
        """Replace the stored state of each of ``batch.states``, then record its ``events``.

        A history entry is kept ``history_ttl_s`` past its event time, counted
        from the customer's latest event and carried over to ``now``
        (:func:`streams.store.codec.history_expiry`); one already past that is
        not written.  The ledger entries are
        written last (with ``ledger_ttl_s``), so an event is only marked seen
        once the states it changed are stored.  When a customer appears twice
        in ``batch.states`` the last one wins.

        ``previous`` may give, per customer, the state the store holds right
        now (as it was loaded or last saved).  The store may then write only
        what changed in the history, the one part that grows; the result is
        the same.  It must be exact: pass nothing when unsure.

        ``stats`` are added as :meth:`add_campaign_stats` adds them and
        ``decisions`` kept as :meth:`record_decisions` keeps them (with
        ``history_ttl_s``), after the states: with the same write where the
        store has transactions (the embedded store: one round trip per batch,
        and a crash loses or doubles nothing), else after the ledger entries
        (a crash in between loses those counts, never doubles them).

        ``outbox`` maps ledger keys (of ``events``) to the outputs of the batch,
        opaque bytes, kept until ``now + ledger_ttl_s`` or until they are marked
        published; they are written before the ledger entries (in the same
        transaction where the store has them), so an event is never marked seen
        without the outputs it caused.  ``published`` is passed on to
        :meth:`mark_published` (after the ledger entries).
        """

    async def unpublished(self, keys: Sequence[EventKey], now: datetime
                          ) -> dict[EventKey, bytes]:
        """The outbox entries stored under any of ``keys``, unexpired at ``now``."""

    async def mark_published(self, keys: Sequence[EventKey]) -> None:
        """Delete the outbox entries stored under ``keys`` (absent ones are ignored)."""

    async def delete_customer(self, customer_id: str) -> None:
        """Erase every row of one customer, ledger entries included."""

    async def customer_events(self, customer_id: str, now: datetime) -> list[str]:
        """Ledger event ids of ``customer_id`` unexpired at ``now``, sorted."""

    async def forget(self, ref: str, requested_at: datetime) -> None:
        """Put a customer on the forget-list: ``ref`` is the keyed hash of the id.

        A later erasure of the same ``ref`` replaces the time.
        """

    async def forgotten(self) -> dict[str, datetime]:
        """The whole forget-list: keyed hash -> event time of the erasure request."""

    async def pseudonym_key(self) -> bytes:
        """The deployment's secret for keyed hashes of customer ids.

        Made at random the first time it is asked for and the same for every
        worker on this store ever after (a concurrent first call still yields
        one key).
        """

    async def reset(self) -> None:
        """Remove every customer, visitor, ledger and outbox entry, so that replay starts empty.

        Model snapshots, the forget-list and the pseudonym key are kept.  On
        Cassandra this truncates the tables, which needs every node up.
        """

    def iter_customers(self, now: datetime, batch: int = 500) -> AsyncIterator[CustomerState]:
        """Every stored customer once, in no particular order, read ``batch`` at a time."""

    async def load_visitors(self, visitor_ids: Sequence[str], now: datetime
                            ) -> dict[str, bytes]:
        """The stored session state (an opaque blob) of ``visitor_ids``, unexpired at
        ``now``; visitors never saved are absent."""

    async def save_visitors(self, states: Mapping[str, bytes], now: datetime,
                            ttl_s: float) -> None:
        """Replace the session state of each visitor in ``states``; it expires
        ``ttl_s`` after ``now`` unless saved again."""

    async def delete_visitors(self, visitor_ids: Sequence[str]) -> None:
        """Delete the session state of ``visitor_ids`` (absent ones are no error)."""

    async def put_snapshot(
        self, model_id: str, version: int, blob: bytes, checksum: str, now: datetime
    ) -> None:
        """Store one version of a model (storing the same version again replaces it)."""

    async def latest_snapshot(self, model_id: str) -> Snapshot | None:
        """The highest stored version of ``model_id``, or None."""

    async def purge_expired(self, now: datetime) -> int:
        """Physically delete rows expired at ``now``; returns how many (0 where TTLs do it).

        Pass the current time: a later read with an earlier ``now`` may miss
        rows that expired in between.
        """

    async def record_decisions(self, decisions: Sequence[StoredDecision], now: datetime,
                               ttl_s: float) -> None:
        """Keep decisions (with their reasons) until ``decided_at + ttl_s``, for the customer view.

        They are part of the customer: :meth:`delete_customer` erases them.
        """

    async def recent_decisions(self, customer_id: str, now: datetime, limit: int = 20
                               ) -> list[StoredDecision]:
        """Up to ``limit`` unexpired decisions of the customer, newest first."""

    async def add_campaign_stats(self, changes: Sequence[CampaignCounts]) -> None:
        """Add each change to the counters of its campaign, variant and group.

        Revenue is kept to the cent (Cassandra counters are integers).
        """

    async def campaign_stats(self, campaign_id: str | None = None) -> list[CampaignCounts]:
        """The counters of one campaign (None: every campaign), sorted by key."""

    async def put_proposals(self, proposals: Sequence[StoredProposal]) -> None:
        """Store new proposals; one already stored (a redelivered batch) is left as it is."""

    async def proposal(self, proposal_id: str) -> StoredProposal | None:
        """One proposal, or None."""

    async def proposals(self, status: str | None = None, limit: int = 100
                        ) -> list[StoredProposal]:
        """Up to ``limit`` proposals (of one ``status``), newest first."""

    async def resolve_proposal(self, proposal_id: str, status: str, at: datetime,
                               by: str | None, note: str | None = None) -> bool:
        """Move a ``proposed`` proposal to ``status``; False when it was not ``proposed``.

        Exactly one of concurrent calls for the same proposal succeeds.
        """

    async def load_visitor_profiles(self, visitor_ids: Sequence[str], now: datetime
                            ) -> dict[str, VisitorState]:
        """The stored states of ``visitor_ids`` unexpired at ``now``; others are absent."""

    async def save_visitor_profiles(self, visitors: Sequence[tuple[VisitorState, datetime]],
                            now: datetime) -> None:
        """Make each ``(state, expires_at)`` the stored row of its visitor.

        A state with nothing to keep (:meth:`VisitorState.is_empty`) or
        expired at ``now`` is deleted instead (as :meth:`delete_visitor_profiles` does).
        """

    async def delete_visitor_profiles(self, visitor_ids: Sequence[str]) -> None:
        """Erase every row of the visitors, their ledger and outbox entries included."""

    async def linked_visitors(self, customer_id: str, now: datetime) -> list[str]:
        """Ids of the visitors linked to ``customer_id`` unexpired at ``now``, sorted."""
