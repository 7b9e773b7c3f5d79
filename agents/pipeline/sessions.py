"""The session stage: page views into each visitor's session, the session models and interests.

Called by the customer stage with the page views of each batch.  It reads
the batch's visitors (cache, then the store, in one call), applies every
page view in event-time order through :func:`agents.core.session_state.view_page`
(the next-page, conversion and remaining-time models learn there) and, once
the batch's newest event time has passed a session's idle timeout, ends
that session so its predictions are scored.  :meth:`SessionStage.commit`
writes the changed visitors before the batch's ledger entries: a batch
redelivered after a crash finds its events in each visitor's recent event
ids and changes nothing twice.

Visitors whose session is open are kept in memory (at most ``max_open``;
beyond it the stalest is written and dropped unscored), so idle sessions
can be ended by event time without reading the store.  A restarted worker
ends a session it no longer holds when the visitor's next page view comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from agents.core.predictions import DriftDetected
from agents.core.session_state import (
    PageSeen,
    SessionModels,
    VisitorSession,
    close_idle,
    interest_scores,
    view_page,
)
from agents.core.sessions import Pending, SessionSummary
from agents.ingest import Output
from schemas.codec import decode, pack
from schemas.records import ModelDrifted, PageView
from streams.catalogue import Catalogue
from streams.store import Store

log = structlog.get_logger(__name__)

#: How long a visitor's state is kept after their last page view.
VISITOR_TTL = timedelta(days=30)
_BLOB_VERSION = 1
_SWEEP_EVERY = timedelta(minutes=1)


@dataclass
class SessionStage:
    """Applies page views to visitors' sessions and teaches the session models."""

    store: Store
    catalogue: Catalogue
    models: SessionModels = field(default_factory=SessionModels)
    max_open: int = 50_000
    ttl: timedelta = VISITOR_TTL
    #: Visitors in memory: those with an open session, and those changed this batch.
    _visitors: dict[str, VisitorSession] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    watermark: datetime | None = None
    _swept: datetime | None = None
    sessions_ended: int = 0
    drifts: list[DriftDetected] = field(default_factory=list)

    async def apply(self, views: Sequence[PageView], now: datetime) -> list[Output]:
        """Apply ``views`` (new, valid page views) in event-time order; the drift
        messages they cause."""
        wanted = [v.visitor_id for v in views if v.visitor_id not in self._visitors]
        if wanted:
            stored = await self.store.load_visitors(wanted, now)
            for vid, blob in stored.items():
                self._visitors[vid] = from_blob(vid, blob)
        for view in sorted(views, key=lambda v: (v.occurred_at, v.event_id)):
            vid = view.visitor_id
            state = self._visitors.get(vid) or VisitorSession(vid)
            state, _ = view_page(state, self._seen(view), self.models)
            self._visitors[vid] = state
            self._dirty.add(vid)
            if self.watermark is None or view.occurred_at > self.watermark:
                self.watermark = view.occurred_at
        self._close_idle()
        drifts, self.models.drifts = self.models.drifts, []
        self.drifts.extend(drifts)
        return [("model-drift", d.model_id.encode(), _drift(d)) for d in drifts]

    def _seen(self, view: PageView) -> PageSeen:
        topics = self.catalogue.topics_of(view.content_id) if view.content_id else None
        return PageSeen(
            view.event_id, view.occurred_at, view.session_id, view.page_type, view.category,
            view.page_view_id, view.device, view.referrer, view.engagement_seconds,
            tuple(view.consent), tuple(topics or ((view.category,) if view.category else ())),
            view.customer_id)

    def _close_idle(self) -> None:
        # Swept at most once per minute of event time: the sweep reads every open session.
        if self.watermark is None or (self._swept is not None
                                      and self.watermark - self._swept < _SWEEP_EVERY):
            return
        self._swept = self.watermark
        for vid, state in list(self._visitors.items()):
            closed, ended = close_idle(state, self.models, self.watermark)
            if ended is not None:
                self._visitors[vid] = closed
                self._dirty.add(vid)
                self.sessions_ended += 1
        # Visitors without an open session need not stay in memory once written.
        idle = [vid for vid, s in self._visitors.items()
                if s.session_id is None and vid not in self._dirty]
        for vid in idle:
            del self._visitors[vid]

    async def commit(self, now: datetime) -> None:
        """Write the visitors changed since the last commit."""
        if self._dirty:
            blobs = {vid: to_blob(self._visitors[vid]) for vid in self._dirty
                     if vid in self._visitors}
            await self.store.save_visitors(blobs, now, self.ttl.total_seconds())
            self._dirty.clear()
        excess = len(self._visitors) - self.max_open
        if excess > 0:
            stalest = sorted(self._visitors, key=lambda v: (
                self._visitors[v].last_at or now, v))[:excess]
            for vid in stalest:
                del self._visitors[vid]

    def end_open_sessions(self) -> int:
        """End every session held in memory as though its timeout had passed (the
        demo's traffic is over); returns how many.  Their visitors are written at
        the next commit."""
        ended = 0
        for vid, state in list(self._visitors.items()):
            if state.session_id is None or state.last_at is None:
                continue
            closed, done = close_idle(state, self.models, state.last_at + timedelta(days=1)
                                      + self.models.session_timeout + self.models.idle_grace)
            if done is not None:
                self._visitors[vid] = closed
                self._dirty.add(vid)
                ended += 1
        self.sessions_ended += ended
        self.drifts.extend(self.models.drifts)
        self.models.drifts = []
        return ended

    def rollback(self) -> None:
        """Forget the visitors changed since the last commit (they are read again).

        The models keep what they learnt from the batch: a retried batch
        teaches them twice, which a River model absorbs as one more example.
        """
        for vid in self._dirty:
            self._visitors.pop(vid, None)
        self._dirty.clear()

    def visitor(self, visitor_id: str) -> VisitorSession | None:
        """The visitor's state in memory (None when not held)."""
        return self._visitors.get(visitor_id)

    def quality(self) -> list[dict[str, Any]]:
        """Progressive-validation figures of the session models."""
        return [self.models.next_page.quality(), *self.models.outcomes.quality()]

    def interests(self, visitor_id: str, at: datetime) -> dict[str, float]:
        """A visitor's engagement-weighted interests as of ``at`` (held in memory)."""
        state = self._visitors.get(visitor_id)
        if state is None:
            return {}
        return interest_scores(state, at, self.models.half_life)


def _drift(d: DriftDetected) -> ModelDrifted:
    return ModelDrifted(
        event_id=f"{d.model_id}:drift:{d.examples}:{d.at.isoformat()}", model_id=d.model_id,
        detected_at=d.at, schema_version=1, examples=d.examples, error=max(d.error, 0.0),
        roc_auc=d.roc_auc, log_loss=d.log_loss)


# --- the stored form ------------------------------------------------------------------------


def to_blob(state: VisitorSession) -> bytes:
    """msgpack of a visitor's state (versioned)."""
    s = state.summary
    return pack({
        "v": _BLOB_VERSION, "customer_id": state.customer_id, "session_id": state.session_id,
        "started_at": _iso(state.started_at), "last_at": _iso(state.last_at),
        "converted": state.converted, "sessions": state.sessions,
        "summary": [s.pages, s.seconds, s.engagement, s.types, s.cart_seen, s.referred,
                    s.device, s.recent, s.product_engagement, s.visits, s.converted_before],
        "views": state.views,
        "pending": [[dict(p.features), p.converts, p.at_seconds, p.remaining,
                     list(p.remaining_key), p.remaining_mean] for p in state.pending],
        "interests": {t: [score, at.isoformat()] for t, (score, at) in state.interests.items()},
        "events": state.events,
    })


def from_blob(visitor_id: str, blob: bytes) -> VisitorSession:
    """The state :func:`to_blob` wrote."""
    d = decode(blob)
    (pages, seconds, engagement, types, cart_seen, referred, device, recent,
     product_engagement, visits, converted_before) = d["summary"]
    return VisitorSession(
        visitor_id=visitor_id, customer_id=d["customer_id"], session_id=d["session_id"],
        started_at=_time(d["started_at"]), last_at=_time(d["last_at"]),
        converted=d["converted"], sessions=d["sessions"],
        summary=SessionSummary(
            pages=pages, seconds=seconds, engagement=engagement, types=dict(types),
            cart_seen=cart_seen, referred=referred, device=device, recent=list(recent),
            product_engagement=product_engagement, visits=visits,
            converted_before=converted_before),
        views=dict(d["views"]),
        pending=[Pending(features, converts, at_s, remaining, (key[0], key[1]), mean)
                 for features, converts, at_s, remaining, key, mean in d["pending"]],
        interests={t: (score, datetime.fromisoformat(at))
                   for t, (score, at) in d["interests"].items()},
        events=list(d["events"]))


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
