"""Events for tests, built in one place: raw messages for a broker and records for the core.

Every builder fills the fields a valid event needs (``schema_version`` 1, a
content id for a click) and takes the rest as keywords, so a test names only
what it is about.  Times: a raw message takes ``at`` as a time or an ISO
string (default: two days ago, inside every retention); a record takes a time.

>>> click("e-1", "c-7", at="2026-03-02T09:00:00+00:00")[:2]
('clicks', b'c-7')
>>> clicked("e-1", at=datetime(2026, 3, 2, 9, tzinfo=UTC), topics=["golf"]).topics
['golf']
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.codec import pack
from schemas.records import Clicked, ConsentChanged

#: (logical topic, key, value): one message as a test produces it.
Raw = tuple[str, bytes, bytes]


def _iso(at: datetime | str | None) -> str:
    if isinstance(at, str):
        return at
    return (at or datetime.now(UTC) - timedelta(days=2)).isoformat()


def click_fields(event_id: str, customer: str = "c1", *, at: datetime | str | None = None,
                 content_id: str = "n1", **extra: object) -> dict[str, object]:
    """The fields of a click on ``content_id`` (``extra``: more fields, or replacements)."""
    return {"event_id": event_id, "customer_id": customer, "schema_version": 1,
            "occurred_at": _iso(at), "content_id": content_id, **extra}


def click(event_id: str, customer: str = "c1", **fields: Any) -> Raw:
    """A click as a message on the ``clicks`` topic, keyed by the customer."""
    return ("clicks", customer.encode(), pack(click_fields(event_id, customer, **fields)))


def consent(event_id: str, customer: str, action: str, *purposes: str,
            at: datetime | str | None = None, source: str = "consent-banner") -> Raw:
    """A consent change as a message on the ``consents`` topic."""
    return ("consents", customer.encode(), pack({
        "event_id": event_id, "customer_id": customer, "schema_version": 1,
        "occurred_at": _iso(at), "action": action, "purposes": list(purposes),
        "source": source}))


def clicked(event_id: str, customer: str = "c-1", *, at: datetime, **fields: Any) -> Clicked:
    """A click record (``fields``: topics, content_id, channel...)."""
    return Clicked(event_id=event_id, customer_id=customer, occurred_at=at, schema_version=1,
                   **fields)


def consent_changed(event_id: str, customer: str = "c-1", *, at: datetime, action: str,
                    purposes: list[str], source: str = "banner") -> ConsentChanged:
    """A consent change record."""
    return ConsentChanged(event_id=event_id, customer_id=customer, occurred_at=at,
                          schema_version=1, action=action, purposes=purposes, source=source)
