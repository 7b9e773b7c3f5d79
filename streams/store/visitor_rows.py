"""Visitor rows, as both stores keep them: one row per visitor id, the state a blob.

A visitor's profile is small and bounded (its newest pages), read and
written whole by the visitor's owner, so one msgpack blob per visitor is
its row (``visitors``), with the linked customer and the expiry as columns
of their own: the linked customer so that an erasure finds the customer's
visitors (``visitors_by_customer`` on Cassandra, an index on the embedded
store), the expiry so that reads hide an expired visitor at the ``now`` they
are given.  Times are milliseconds, as everywhere in the store.

>>> from datetime import UTC, datetime
>>> from agents.core.visitors import ViewedPage, VisitorState
>>> t = datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)
>>> state = VisitorState("v-1", pages=[ViewedPage("pv-1", t, "s-1", "/p", "product",
...                      "golf-1", ("golf",), 42.0)], last_seen=t)
>>> back = visitor_of("v-1", visitor_blob(state))
>>> back.pages[0].occurred_at.microsecond, back.pages[0].topics, back == normalise_visitor(state)
(123000, ('golf',), True)
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from agents.core.visitors import ViewedPage, VisitorState
from schemas.codec import decode, pack
from streams.store.codec import from_ms, to_ms

#: Tables of anonymous visitors (keyed by visitor id, and by customer for erasure).
VISITOR_TABLES = ("visitors", "visitors_by_customer")
#: Layout of the blob; a change gets a new number and the old one stays readable.
BLOB_VERSION = 1


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_ms(moment)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


def visitor_blob(state: VisitorState) -> bytes:
    """The msgpack blob of ``state``."""
    return pack({
        "v": BLOB_VERSION,
        "pages": [[p.view_id, to_ms(p.occurred_at), p.session_id, p.url, p.page_type,
                   p.content_id, list(p.topics), p.engagement_seconds] for p in state.pages],
        "revoked_at": _ms(state.revoked_at),
        "last_seen": _ms(state.last_seen),
        "customer_id": state.customer_id,
        "link_event_id": state.link_event_id,
        "linked_at": _ms(state.linked_at),
    })


def visitor_of(visitor_id: str, blob: bytes) -> VisitorState:
    """The state stored as ``blob`` for ``visitor_id``."""
    data = decode(blob)
    if not isinstance(data, dict) or data.get("v") != BLOB_VERSION:
        raise ValueError(f"visitor {visitor_id!r}: stored blob is not of version {BLOB_VERSION}")
    pages = [ViewedPage(str(view_id), from_ms(at), str(session), str(url), str(kind),
                        content, tuple(str(t) for t in topics),
                        None if engaged is None else float(engaged))
             for view_id, at, session, url, kind, content, topics, engaged in data["pages"]]
    return VisitorState(visitor_id, pages=pages, revoked_at=_dt(data["revoked_at"]),
                        last_seen=_dt(data["last_seen"]), customer_id=data["customer_id"],
                        link_event_id=data["link_event_id"], linked_at=_dt(data["linked_at"]))


def normalise_visitor(state: VisitorState) -> VisitorState:
    """``state`` as the store gives it back (UTC, milliseconds floored)."""
    def norm(moment: datetime | None) -> datetime | None:
        return None if moment is None else from_ms(to_ms(moment))

    pages = [replace(p, occurred_at=from_ms(to_ms(p.occurred_at))) for p in state.pages]
    return replace(state, pages=pages, revoked_at=norm(state.revoked_at),
                   last_seen=norm(state.last_seen), linked_at=norm(state.linked_at))
