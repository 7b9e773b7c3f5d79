"""Privacy in the shell: pseudonyms, the forget-list and the data-access export.

- :class:`Pseudonyms` makes the keyed hash (HMAC-SHA-256) of a customer id
  with the deployment's secret, which the store keeps
  (:meth:`streams.store.Store.pseudonym_key`).  Logs and the forget-list use
  it, never the raw id.
- :class:`ForgetList` is the forget-list in memory: the hash of every erased
  customer and the event time of the erasure request.  Events of that
  customer up to that time are left out, live and in replay, so a rebuild
  does not resurrect an erased customer; a customer who signs up again later
  starts from nothing.
- :func:`export_customer` is everything Relevanz holds about one customer
  (GDPR Art. 15), as JSON-ready data.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict
from datetime import datetime
from typing import Any, Protocol

from agents.core.customer import CustomerState
from schemas.codec import decode, to_wire
from schemas.customer_export import CUSTOMER_EXPORT_VERSION
from schemas.records import ConsentChanged, Record
from streams.store import Store


class Forecaster(Protocol):
    """What an export asks of the worker's forecasts (the hot path's ``Forecaster``)."""

    def predict_at(self, state: CustomerState, at: datetime) -> tuple[float, float] | None:
        """Purchase probability and churn risk of ``state`` as of ``at``."""


class Pseudonyms:
    """Keyed hashes of customer ids, stable within a deployment.

    >>> p = Pseudonyms(b"secret")
    >>> p.ref("c-42") == p.ref("c-42"), p.ref("c-42") == Pseudonyms(b"other").ref("c-42")
    (True, False)
    >>> from streams.logs import customer_ref
    >>> len(p.ref("c-42")), p.ref("c-42") == customer_ref("c-42", b"secret")
    (32, True)
    """

    #: Pseudonyms remembered per instance (the forget-list asks for every event once
    #: anyone is on it); the memo is emptied when it reaches this size.
    MEMO_MAX = 100_000

    def __init__(self, key: bytes) -> None:
        self._key = key
        # The key is hashed into the HMAC once; ref copies that state.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self._memo: dict[str, str] = {}

    def ref(self, customer_id: str) -> str:
        """The customer's pseudonym: 128 bits of HMAC-SHA-256, hex.

        The same as :func:`streams.logs.customer_ref` with this key.
        """
        known = self._memo.get(customer_id)
        if known is not None:
            return known
        mac = self._keyed.copy()
        mac.update(customer_id.encode())
        ref = mac.hexdigest()[:32]
        if len(self._memo) >= self.MEMO_MAX:
            self._memo.clear()
        self._memo[customer_id] = ref
        return ref


class ForgetList:
    """Erased customers (by pseudonym) and when their erasure was requested."""

    def __init__(self, pseudonyms: Pseudonyms, entries: dict[str, datetime] | None = None
                 ) -> None:
        self.pseudonyms = pseudonyms
        self._entries = dict(entries or {})

    def replace(self, entries: dict[str, datetime]) -> None:
        """Take the whole list as read from the store."""
        self._entries = dict(entries)

    def requested_at(self, customer_id: str) -> datetime | None:
        """When the customer's latest erasure was requested, or None."""
        return self._entries.get(self.pseudonyms.ref(customer_id)) if self._entries else None

    def add(self, customer_id: str, requested_at: datetime) -> str:
        """Remember an erasure (after the store has it); returns the pseudonym."""
        ref = self.pseudonyms.ref(customer_id)
        known = self._entries.get(ref)
        if known is None or known < requested_at:
            self._entries[ref] = requested_at
        return ref

    def __len__(self) -> int:
        return len(self._entries)


#: Decisions shown per customer (newest first).
RECENT_DECISIONS = 20


async def export_customer(store: Store, customer_id: str, now: datetime,
                          forecaster: Forecaster | None = None, as_of: datetime | None = None
                          ) -> dict[str, Any] | None:
    """Everything held about ``customer_id``, or None when nothing is.

    With a ``forecaster``, the purchase probability and churn risk are
    answered as of ``as_of`` (default ``now``) by its current models; without one,
    they are the values computed at the customer's latest event (``as_of``
    is that event's time).

    Profile and consent, interests and tags, purchase figures, predictions,
    the latest decisions with their reasons, the
    interaction history, pending sends, the events parked until a consent
    allows them and the ids of the events the ledger remembers, with times in
    ISO 8601.
    """
    states = await store.load_customers([customer_id], now)
    events = await store.customer_events(customer_id, now)
    decisions = await store.recent_decisions(customer_id, now, RECENT_DECISIONS)
    state = states.get(customer_id)
    if state is None and not events and not decisions:
        return None
    data = _jsonable(asdict(state or CustomerState(customer_id)))
    assert isinstance(data, dict)
    # Newest first, each as published: content, variant, policy, score and reasons.
    data["recent_decisions"] = [decode(d.payload) for d in decisions]
    if state is not None and state.predictions is not None:
        asked = as_of or now
        served = forecaster.predict_at(state, asked) if forecaster is not None else None
        if served is None:
            data["predictions"]["as_of"] = state.predictions.at.isoformat()
        else:
            data["predictions"].update(purchase=served[0], churn=served[1],
                                       as_of=asked.isoformat())
    data["ledger_event_ids"] = events
    data["exported_at"] = now.isoformat()
    data["format_version"] = CUSTOMER_EXPORT_VERSION  # schemas/customer_export.py
    return data


def erasure_request(customer_id: str, event_id: str, now: datetime) -> ConsentChanged:
    """The ``consents`` event of an erasure an operator requests through the API.

    It takes the path every erasure takes (the worker cancels, deletes and
    forgets); the legal basis is the customer's right to erasure.

    >>> from datetime import UTC
    >>> r = erasure_request("c-42", "erasure-1", datetime(2026, 1, 1, tzinfo=UTC))
    >>> r.action, r.purposes, r.source, r.legal_basis
    ('erasure_requested', [], 'operator-api', 'legal_obligation')
    """
    return ConsentChanged(event_id=event_id, customer_id=customer_id, occurred_at=now,
                          schema_version=1, action="erasure_requested", purposes=[],
                          source="operator-api", legal_basis="legal_obligation")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Record):  # parked events, as they arrived
        return to_wire(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
