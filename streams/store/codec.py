"""CustomerState to table rows and back, shared by both store implementations.

One mapping, so the embedded and the Cassandra store cannot drift apart: a
state becomes one row per table of ``schemas/cassandra.cql`` (the column
names below are those of the schema, in order), with every time as whole
milliseconds since the Unix epoch.  Milliseconds because Cassandra's
``timestamp`` has no finer unit; the sub-millisecond part is dropped
(floored), so a saved state loads as :func:`normalise` of it.

>>> from datetime import UTC, datetime, timedelta, timezone
>>> berlin = timezone(timedelta(hours=1))
>>> to_ms(datetime(1970, 1, 1, 1, 0, 0, 1999, tzinfo=berlin))
1
>>> from_ms(1)
datetime.datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=datetime.timezone.utc)
>>> to_ms(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))  # floors, also before 1970
-1
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgpack

from agents.core.customer import (
    AssignedTag,
    ConsentEntry,
    CustomerPredictions,
    CustomerState,
    Interaction,
    MasterData,
    PendingSend,
    PurchaseFigures,
    TopicInterest,
)
from schemas.codec import to_wire
from schemas.records import Clicked, Purchased
from schemas.validation import build
from streams.store.protocol import CampaignCounts, StoredProposal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

#: Columns of each customer table, in the order of the row tuples below.
CUSTOMER_COLUMNS = (
    "customer_id", "locale", "language", "time_zone", "master_updated_at", "country",
    "birth_year", "gender", "attributes", "orders", "revenue", "first_purchase_at",
    "last_purchase_at", "last_event_at", "predictions", "parked",
)
CONSENT_COLUMNS = ("customer_id", "purpose", "granted", "decided_at", "source", "legal_basis",
                   "earlier")
INTEREST_COLUMNS = ("customer_id", "topic", "score", "scored_at", "recent")
TAG_COLUMNS = ("customer_id", "tag", "topic", "assigned_at", "caused_by")
INTERACTION_COLUMNS = (
    "customer_id", "occurred_at", "event_id", "kind", "content_id", "campaign_id", "amount",
    "expires_at",
)
PENDING_COLUMNS = (
    "customer_id", "trigger_id", "idempotency_key", "channel", "send_at", "campaign_id",
    "content_id",
)
#: Table name -> columns, for every table that holds part of a customer.
CUSTOMER_TABLES: dict[str, tuple[str, ...]] = {
    "customers": CUSTOMER_COLUMNS,
    "customer_consent": CONSENT_COLUMNS,
    "customer_interests": INTEREST_COLUMNS,
    "customer_tags": TAG_COLUMNS,
    "interactions": INTERACTION_COLUMNS,
    "customer_pending_sends": PENDING_COLUMNS,
}
#: Primary key of each customer table (partition key first, then clustering columns).
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "customer_consent": ("customer_id", "purpose"),
    "customer_interests": ("customer_id", "topic"),
    "customer_tags": ("customer_id", "tag"),
    "interactions": ("customer_id", "occurred_at", "event_id"),
    "customer_pending_sends": ("customer_id", "trigger_id"),
}
LEDGER_COLUMNS = ("partition_key", "event_id", "expires_at")
SNAPSHOT_COLUMNS = ("model_id", "version", "payload", "checksum", "created_at")

# Row shapes (times in ms).  ``attributes`` is a dict and ``recent`` a list of
# ms; the embedded store stores those two as JSON text.
CustomerRow = tuple[
    str, str | None, str | None, str | None, int | None, str | None, int | None, str | None,
    dict[str, str], int, float, int | None, int | None, int | None, bytes | None, bytes | None,
]
ConsentRow = tuple[str, str, bool, int, str, str, bytes | None]
InterestRow = tuple[str, str, float, int, list[int]]
TagRow = tuple[str, str, str, int, str]
InteractionRow = tuple[str, int, str, str, str | None, str | None, float | None, int]
PendingRow = tuple[str, str, str, str, int, str, str]


class CustomerRows(NamedTuple):
    """One customer as rows of each customer table."""

    customer: CustomerRow
    consent: list[ConsentRow]
    interests: list[InterestRow]
    tags: list[TagRow]
    history: list[InteractionRow]
    pending: list[PendingRow]


def to_ms(moment: datetime) -> int:
    """Whole milliseconds since the epoch, sub-millisecond part floored.

    >>> to_ms(datetime(2026, 1, 1))
    Traceback (most recent call last):
    ...
    ValueError: naive datetime 2026-01-01 00:00:00: the store keeps timezone-aware times only
    """
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment}: the store keeps timezone-aware times only")
    return (moment - EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The UTC datetime ``ms`` milliseconds after the epoch."""
    return EPOCH + ms * _MS


def _opt_ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_ms(moment)


def _opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


def duration_ms(seconds: float) -> int:
    """A duration in whole milliseconds (rounded), as both stores compute expiry times."""
    return round(seconds * 1000)


def latest_per_customer(states: Iterable[CustomerState]) -> list[CustomerState]:
    """One state per customer, the last given winning (order of first appearance)."""
    return list({state.customer_id: state for state in states}.values())


def history_expiry(occurred_ms: int, latest_ms: int | None, now_ms: int,
                   history_ttl_ms: int) -> int:
    """When a history entry expires in the store: ``history_ttl_ms`` after its event
    time, counted on the customer's own clock and carried over to the wall clock.

    The entry's age is measured from the customer's latest event, not from
    ``now_ms``, so a backfill of old events keeps what live traffic would have
    kept; the store keeps nothing longer than ``history_ttl_ms`` past its
    write.  For live traffic (latest event about now) this is
    ``occurred_ms + history_ttl_ms``.

    >>> day = 86_400_000
    >>> history_expiry(100 * day, 100 * day, 100 * day, 30 * day) // day  # live
    130
    >>> history_expiry(10 * day, 15 * day, 9_000 * day, 30 * day) // day  # backfill
    9025
    """
    age = 0 if latest_ms is None else latest_ms - occurred_ms
    return now_ms + history_ttl_ms - age


def _latest_ms(state: CustomerState) -> int | None:
    """The customer's latest event time (without one: the newest history entry's)."""
    if state.last_event_at is not None:
        return to_ms(state.last_event_at)
    return max((to_ms(e.occurred_at) for e in state.history), default=None)


def rows_of(state: CustomerState, now_ms: int, history_ttl_ms: int) -> CustomerRows:
    """The rows that store ``state``; history entries already expired are dropped.

    An entry's expiry follows :func:`history_expiry`.

    History entries are keyed by ``(occurred_at, event_id)`` in the store;
    when two entries share a key the later one in the list wins.
    """
    cid = state.customer_id
    master = state.master
    purchases = state.purchases
    customer: CustomerRow = (
        cid,
        master.locale if master else None,
        master.language if master else None,
        master.time_zone if master else None,
        to_ms(master.updated_at) if master else None,
        master.country if master else None,
        master.birth_year if master else None,
        master.gender if master else None,
        dict(master.attributes) if master else {},
        purchases.orders,
        purchases.revenue,
        _opt_ms(purchases.first_at),
        _opt_ms(purchases.last_at),
        _opt_ms(state.last_event_at),
        predictions_blob(state.predictions),
        parked_blob(state.parked),
    )
    consent = [(cid, purpose, c.granted, to_ms(c.at), c.source, c.legal_basis,
                earlier_blob(c.earlier)) for purpose, c in state.consent.items()]
    interests = [(cid, topic, i.score, to_ms(i.scored_at), [to_ms(t) for t in i.recent])
                 for topic, i in state.interests.items()]
    tags = [(cid, tag, t.topic, to_ms(t.assigned_at), t.caused_by)
            for tag, t in state.tags.items()]
    history: dict[tuple[int, str], InteractionRow] = {}
    latest = _latest_ms(state)
    for entry in state.history:
        occurred = to_ms(entry.occurred_at)
        expires = history_expiry(occurred, latest, now_ms, history_ttl_ms)
        if expires > now_ms:
            history[(occurred, entry.event_id)] = (
                cid, occurred, entry.event_id, entry.kind, entry.content_id,
                entry.campaign_id, entry.amount, expires)
    pending = sorted((cid, p.trigger_id, p.idempotency_key, p.channel, to_ms(p.send_at),
                      p.campaign_id, p.content_id) for p in state.pending)
    return CustomerRows(customer, consent, interests, tags,
                        [history[key] for key in sorted(history)],
                        list({row[1]: row for row in pending}.values()))


class HistoryDelta(NamedTuple):
    """How one customer's stored history changes: keys to delete, rows to write."""

    removed: list[tuple[str, int, str]]  # (customer_id, occurred_at ms, event_id)
    added: list[InteractionRow]


def rows_with_history_delta(before: CustomerState, state: CustomerState, now_ms: int,
                            history_ttl_ms: int) -> tuple[CustomerRows, HistoryDelta]:
    """The rows of ``state`` except its history, and how its history differs from ``before``'s.

    Entries are compared by identity: the core builds a new history list from
    the same entry objects, so a busy customer's 200 entries cost a set
    lookup each, not a row each.  An entry that is equal but not the same
    object is deleted and written again, which is still right.

    >>> at = datetime(2026, 3, 1, tzinfo=UTC)
    >>> old = [Interaction(at + timedelta(minutes=i), f"e{i}", "click") for i in range(3)]
    >>> before = CustomerState("c-1", history=old)
    >>> new = Interaction(at + timedelta(minutes=3), "e3", "click")
    >>> after = CustomerState("c-1", history=[*old[1:], new])
    >>> _, delta = rows_with_history_delta(before, after, to_ms(at), 10**12)
    >>> [key[2] for key in delta.removed], [row[2] for row in delta.added]
    (['e0'], ['e3'])
    """
    cid = state.customer_id
    kept = {id(entry) for entry in state.history}
    had = {id(entry) for entry in before.history}
    removed = [(cid, to_ms(e.occurred_at), e.event_id) for e in before.history
               if id(e) not in kept]
    added: list[InteractionRow] = []
    latest = _latest_ms(state)
    for entry in state.history:
        if id(entry) in had:
            continue
        occurred = to_ms(entry.occurred_at)
        expires = history_expiry(occurred, latest, now_ms, history_ttl_ms)
        if expires > now_ms:
            added.append((cid, occurred, entry.event_id, entry.kind, entry.content_id,
                          entry.campaign_id, entry.amount, expires))
    # A shallow copy without history: dataclasses.replace costs five times as much here.
    rest = CustomerState.__new__(CustomerState)
    rest.__dict__.update(state.__dict__)
    rest.history = []
    rows = rows_of(rest, now_ms, history_ttl_ms)
    return rows, HistoryDelta(removed, added)


def state_of(customer: Sequence[Any], consent: Iterable[Sequence[Any]],
             interests: Iterable[Sequence[Any]], tags: Iterable[Sequence[Any]],
             history: Iterable[Sequence[Any]], pending: Iterable[Sequence[Any]] = ()
             ) -> CustomerState:
    """The state stored in these rows (shaped as :class:`CustomerRows`, history sorted).

    Pending sends come back soonest first.

    Empty collections may come back as None (Cassandra does that for empty
    collection values); they read as empty.
    """
    (cid, locale, language, time_zone, master_ms, country, birth_year, gender, attributes,
     orders, revenue, first_ms, last_ms, last_event_ms, *rest) = customer
    master = None if master_ms is None else MasterData(
        locale=locale, language=language, time_zone=time_zone, updated_at=from_ms(master_ms),
        country=country, birth_year=birth_year, gender=gender,
        attributes=dict(attributes or {}))
    return CustomerState(
        customer_id=cid,
        master=master,
        consent={row[1]: ConsentEntry(bool(row[2]), from_ms(row[3]), row[4], row[5],
                                      earlier_of(row[6] if len(row) > 6 else None))
                 for row in consent},
        interests={row[1]: TopicInterest(row[2], from_ms(row[3]),
                                         [from_ms(t) for t in row[4] or ()])
                   for row in interests},
        tags={row[1]: AssignedTag(row[2], from_ms(row[3]), row[4]) for row in tags},
        purchases=PurchaseFigures(orders=orders or 0, revenue=revenue or 0.0,
                                  first_at=_opt_dt(first_ms), last_at=_opt_dt(last_ms)),
        history=[Interaction(from_ms(row[1]), row[2], row[3], row[4], row[5], row[6])
                 for row in history],
        last_event_at=_opt_dt(last_event_ms),
        pending=sorted((PendingSend(row[1], row[2], row[3], from_ms(row[4]), row[5], row[6])
                        for row in pending), key=_pending_key),
        predictions=predictions_of(rest[0] if rest else None),
        parked=parked_of(rest[1] if len(rest) > 1 else None),
    )


def earlier_blob(earlier: Sequence[tuple[datetime, bool]]) -> bytes | None:
    """A consent entry's earlier decisions as the column value (msgpack ``[ms, granted]``).

    >>> at = datetime(2026, 3, 1, tzinfo=UTC)
    >>> earlier_of(earlier_blob([(at, True)])) == ((at, True),), earlier_blob(())
    (True, None)
    """
    if not earlier:
        return None
    blob: bytes = msgpack.packb([[to_ms(at), granted] for at, granted in earlier])
    return blob


def earlier_of(blob: bytes | None) -> tuple[tuple[datetime, bool], ...]:
    """The earlier decisions stored as ``blob`` (see :func:`earlier_blob`)."""
    if not blob:
        return ()
    return tuple((from_ms(ms), bool(granted)) for ms, granted in msgpack.unpackb(blob))


#: Parked event types by the tag they are stored under.
_PARKED_TYPES: dict[str, type[Clicked] | type[Purchased]] = {
    "click": Clicked, "purchase": Purchased}


def parked_blob(parked: Sequence[Clicked | Purchased]) -> bytes | None:
    """Parked events as the column value: msgpack ``[kind, wire map]``, oldest first.

    >>> click = Clicked(event_id="e1", customer_id="c-1", schema_version=1,
    ...                 occurred_at=datetime(2026, 3, 1, tzinfo=UTC), content_id="n-1")
    >>> parked_of(parked_blob([click])) == [click], parked_blob([])
    (True, None)
    """
    if not parked:
        return None
    blob: bytes = msgpack.packb([["click" if isinstance(e, Clicked) else "purchase",
                                  to_wire(e)] for e in parked])
    return blob


def parked_of(blob: bytes | None) -> list[Clicked | Purchased]:
    """The parked events stored as ``blob`` (see :func:`parked_blob`)."""
    if not blob:
        return []
    events: list[Clicked | Purchased] = []
    for kind, wire in msgpack.unpackb(blob):
        event = build(_PARKED_TYPES[kind], wire)
        assert isinstance(event, Clicked | Purchased)
        events.append(event)
    return events


def predictions_blob(predictions: CustomerPredictions | None) -> bytes | None:
    """``predictions`` as the opaque column value both stores keep (msgpack, times in ms).

    >>> at = datetime(2026, 3, 1, 18, tzinfo=UTC)
    >>> p = CustomerPredictions(0.25, 0.5, 19, at, {18: 1.0}, at, units=3)
    >>> predictions_of(predictions_blob(p)) == p, predictions_blob(None)
    (True, None)
    """
    if predictions is None:
        return None
    blob: bytes = msgpack.packb({
        "purchase": predictions.purchase, "churn": predictions.churn,
        "best_hour": predictions.best_hour, "at": to_ms(predictions.at),
        "hours": sorted(predictions.hours.items()),
        "hours_at": _opt_ms(predictions.hours_at), "units": predictions.units})
    return blob


def predictions_of(blob: bytes | None) -> CustomerPredictions | None:
    """The predictions stored as ``blob`` (see :func:`predictions_blob`)."""
    if not blob:
        return None
    data = msgpack.unpackb(blob, strict_map_key=False)
    return CustomerPredictions(
        purchase=float(data["purchase"]), churn=float(data["churn"]),
        best_hour=data["best_hour"], at=from_ms(data["at"]),
        hours={int(slot): float(score) for slot, score in data["hours"]},
        hours_at=_opt_dt(data["hours_at"]),
        units=int(data.get("units", 0)))  # absent in blobs written before it was kept


def _pending_key(pending: PendingSend) -> tuple[datetime, str]:
    return pending.send_at, pending.trigger_id


def _floor(moment: datetime) -> datetime:
    return from_ms(to_ms(moment))


def normalise(state: CustomerState) -> CustomerState:
    """``state`` as the store gives it back: UTC millisecond times, history keyed and sorted.

    >>> from datetime import timezone
    >>> cest = timezone(timedelta(hours=2))
    >>> s = normalise(CustomerState("c-1", last_event_at=datetime(2026, 5, 1, 12, 0, 0, 123456,
    ...                                                           tzinfo=cest)))
    >>> s.last_event_at
    datetime.datetime(2026, 5, 1, 10, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    """
    master = state.master
    history: dict[tuple[datetime, str], Interaction] = {}
    for entry in state.history:
        at = _floor(entry.occurred_at)
        history[(at, entry.event_id)] = replace(entry, occurred_at=at)
    return CustomerState(
        customer_id=state.customer_id,
        master=None if master is None else replace(
            master, updated_at=_floor(master.updated_at), attributes=dict(master.attributes)),
        consent={k: replace(c, at=_floor(c.at),
                            earlier=tuple((_floor(at), g) for at, g in c.earlier))
                 for k, c in state.consent.items()},
        interests={k: replace(i, scored_at=_floor(i.scored_at),
                              recent=[_floor(t) for t in i.recent])
                   for k, i in state.interests.items()},
        tags={k: replace(t, assigned_at=_floor(t.assigned_at)) for k, t in state.tags.items()},
        purchases=replace(
            state.purchases,
            first_at=None if state.purchases.first_at is None else _floor(
                state.purchases.first_at),
            last_at=None if state.purchases.last_at is None else _floor(
                state.purchases.last_at)),
        history=[history[key] for key in sorted(history)],
        last_event_at=None if state.last_event_at is None else _floor(state.last_event_at),
        pending=sorted({p.trigger_id: replace(p, send_at=_floor(p.send_at))
                        for p in state.pending}.values(), key=_pending_key),
        predictions=predictions_of(predictions_blob(state.predictions)),
        parked=parked_of(parked_blob(state.parked)),
    )


# -- campaigns ------------------------------------------------------------------------

#: Counter values of one (campaign, variant, group; the column is ``cohort``): sends,
#: clicks, conversions, revenue in cents, revenue squared in cents squared.
StatValues = tuple[int, int, int, int, int]


def cents(amount: float) -> int:
    """``amount`` in whole cents (rounded), as both stores keep revenue.

    >>> cents(19.995), cents(-0.004)
    (2000, 0)
    """
    return round(amount * 100)


def summed_stats(changes: Iterable[CampaignCounts]) -> dict[tuple[str, str, str], StatValues]:
    """Changes added up per (campaign, variant, group); all-zero sums are left out."""
    sums: dict[tuple[str, str, str], list[int]] = {}
    for c in changes:
        key = (c.campaign_id, c.variant, c.group)
        values = sums.setdefault(key, [0, 0, 0, 0, 0])
        values[0] += c.sends
        values[1] += c.clicks
        values[2] += c.conversions
        values[3] += cents(c.revenue)
        values[4] += round(c.revenue_sq * 10_000)
    return {key: (v[0], v[1], v[2], v[3], v[4]) for key, v in sums.items() if any(v)}


def counts_of(row: Sequence[Any]) -> CampaignCounts:
    """A stored ``campaign_stats`` row as :class:`streams.store.CampaignCounts`."""
    campaign_id, variant, group, sends, clicks, conversions, revenue, revenue_sq = row
    return CampaignCounts(campaign_id, variant, group, int(sends or 0), int(clicks or 0),
                          int(conversions or 0), (revenue or 0) / 100,
                          (revenue_sq or 0) / 10_000)


def proposal_row(p: StoredProposal) -> tuple[Any, ...]:
    """A :class:`streams.store.StoredProposal` as a ``proposals`` row (times in ms)."""
    return (p.proposal_id, p.customer_id, p.campaign_id, to_ms(p.created_at),
            to_ms(p.expires_at), p.status, p.payload, _opt_ms(p.resolved_at), p.resolved_by,
            p.note)


def proposal_of(row: Sequence[Any]) -> StoredProposal:
    """A ``proposals`` row (times in ms) as a :class:`streams.store.StoredProposal`."""
    (proposal_id, customer_id, campaign_id, created_ms, expires_ms, status, payload,
     resolved_ms, resolved_by, note) = row
    return StoredProposal(proposal_id, customer_id, campaign_id, from_ms(created_ms),
                          from_ms(expires_ms), status, bytes(payload), _opt_dt(resolved_ms),
                          resolved_by, note)

