"""A visitor's session, page view by page view: the pure rules of the session stage.

:func:`view_page` applies one page view to a :class:`VisitorSession` and the
shared models (:class:`SessionModels`): it learns the transition from the
session's last pages (next-page model), predicts the conversion chance and
the remaining time of the session so far (kept as :class:`Pending` until the
session ends) and adds the view's engagement to the visitor's interests.

Rules (all in event time, so a replay decides the same):

- **One page view, many reports.** A report whose ``page_view_id`` was seen
  in the session updates that view's engagement only (the largest reported
  counts, the interest gets the difference in weight); it is not a new page.
  An ``event_id`` seen among the visitor's last :data:`MAX_EVENTS` events
  changes nothing (a redelivery).
- **Sessions end** when the visitor's next page view names another
  ``session_id`` (the pending predictions are scored: converted or not), when
  the session reaches a confirmation page (converted), or when
  :func:`end_session` is called for a session idle longer than the timeout.
- **Consent.** Without ``personalisation`` or ``profiling`` in the view's
  cookie consent nothing of the visitor is kept and no model learns from
  the view (strict by default); interests need ``profiling``, and a view
  without it clears them.
- **Bounds.** A session keeps at most :data:`MAX_PENDING` predictions, the
  visitor at most :data:`MAX_TOPICS` interest topics and
  :data:`MAX_VIEWS` page view ids.

>>> from datetime import UTC, datetime, timedelta
>>> models, t = SessionModels(), datetime(2026, 3, 1, tzinfo=UTC)
>>> s = VisitorSession("v1")
>>> s, ended = view_page(s, PageSeen("e1", t, "s1", "home", None, None, "desktop",
...     None, None, ("personalisation",), ()), models)
>>> s, ended = view_page(s, PageSeen("e2", t + timedelta(seconds=40), "s1", "product",
...     "shoes", None, "desktop", None, None, ("personalisation",), ()), models)
>>> s.summary.pages, s.summary.recent, len(s.pending)
(2, ['home', 'product:shoes'], 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from agents.core.predictions import DriftDetected
from agents.core.sessions import (
    CART_PAGES,
    CONVERSION_PAGE,
    EngagementRules,
    NextPageModel,
    Pending,
    SessionOutcomes,
    SessionSummary,
    engagement_weight,
    page_key,
    remaining_key,
)

#: Predictions kept per session until it ends; later page views are not scored.
MAX_PENDING = 100
#: Interest topics kept per visitor (the weakest go first).
MAX_TOPICS = 50
#: Page view ids remembered per session, for heartbeats.
MAX_VIEWS = 200
#: Event ids remembered per visitor, to recognise a redelivery.
MAX_EVENTS = 200
_PERSONAL = frozenset({"personalisation", "profiling"})


@dataclass(frozen=True)
class PageSeen:
    """One page view as the session rules read it (the fields of ``PageView``)."""

    event_id: str
    at: datetime
    session_id: str
    page_type: str
    category: str | None
    page_view_id: str | None
    device: str
    referrer: str | None
    engagement_seconds: float | None
    consent: Sequence[str]
    #: Interest topics of the page (its catalogue item's, or its category).
    topics: Sequence[str]
    customer_id: str | None = None


@dataclass
class VisitorSession:
    """What is kept of one visitor: the current session and the interests."""

    visitor_id: str
    customer_id: str | None = None
    session_id: str | None = None
    started_at: datetime | None = None
    last_at: datetime | None = None
    converted: bool = False
    summary: SessionSummary = field(default_factory=SessionSummary)
    #: page_view_id -> largest engagement reported (seconds)
    views: dict[str, float] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    #: topic -> (decayed score, as of)
    interests: dict[str, tuple[float, datetime]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    sessions: int = 0


@dataclass(frozen=True)
class EndedSession:
    """A session that ended, with its outcome: what the models were scored on."""

    visitor_id: str
    session_id: str
    converted: bool
    length_s: float
    pages: int
    at: datetime


@dataclass
class SessionModels:
    """The models every session teaches (one per worker), and their rules."""

    next_page: NextPageModel = field(default_factory=NextPageModel)
    outcomes: SessionOutcomes = field(default_factory=SessionOutcomes)
    engagement: EngagementRules = field(default_factory=EngagementRules)
    half_life: timedelta = timedelta(days=7)
    session_timeout: timedelta = timedelta(minutes=30)
    #: How much later than the timeout an idle session is ended by the newest event
    #: time seen (:func:`is_idle`): partitions are read at different paces, so the
    #: newest time of one may run ahead of a visitor's on another.
    idle_grace: timedelta = timedelta(hours=6)
    drifts: list[DriftDetected] = field(default_factory=list)


def view_page(session: VisitorSession, view: PageSeen, models: SessionModels
              ) -> tuple[VisitorSession, EndedSession | None]:
    """Apply one page view; returns the new state and the session it ended, if any.

    The state is a new object; ``session`` is not changed.  The models learn.
    """
    if view.event_id in session.events:
        return session, None
    if not _PERSONAL.intersection(view.consent):
        # Strict: nothing of a visitor without consent is kept.
        return VisitorSession(session.visitor_id), None
    state = replace(session, views=dict(session.views), pending=list(session.pending),
                    interests=dict(session.interests),
                    events=[*session.events[-(MAX_EVENTS - 1):], view.event_id],
                    summary=replace(session.summary, types=dict(session.summary.types),
                                    recent=list(session.summary.recent)))
    if view.customer_id:
        state.customer_id = view.customer_id
    ended = None
    if state.session_id is not None and view.session_id != state.session_id:
        ended = end_session(state, models, view.at)
        state = replace(state, session_id=None, views={}, pending=[], converted=False,
                        summary=fresh_summary(state))
    if state.session_id is None:
        state.session_id, state.started_at, state.sessions = view.session_id, view.at, \
            state.sessions + 1
    assert state.started_at is not None
    seconds = max(0.0, view.engagement_seconds or 0.0)
    before = state.views.get(view.page_view_id) if view.page_view_id else None
    if before is not None:  # a heartbeat or the final report of a known view
        grown = max(seconds, before)
        state.summary.engagement += grown - before
        if view.page_type in CART_PAGES or view.page_type == "product":
            state.summary.product_engagement += grown - before
        state.views[view.page_view_id or ""] = grown
        _add_interest(state, view, engagement_weight(grown, models.engagement)
                      - engagement_weight(before, models.engagement), models)
        return state, ended
    if view.page_view_id and len(state.views) < MAX_VIEWS:
        state.views[view.page_view_id] = seconds
    summary = state.summary
    _count_page(summary, view, seconds, models)
    state.last_at = max(state.last_at or view.at, view.at)
    summary.seconds = (state.last_at - state.started_at).total_seconds()
    _add_interest(state, view, engagement_weight(seconds, models.engagement), models)
    if state.converted:
        return state, ended
    if view.page_type == CONVERSION_PAGE:
        state.converted = True
        models.drifts.extend(models.outcomes.settle(state.pending, True, summary.seconds,
                                                    view.at))
        state.pending = []
        return state, ended
    if len(state.pending) < MAX_PENDING:
        p, left, x = models.outcomes.predict(summary)
        state.pending.append(Pending(x, p, summary.seconds, left, remaining_key(summary),
                                     models.outcomes.mean_left))
    return state, ended


def _count_page(summary: SessionSummary, view: PageSeen, seconds: float,
                models: SessionModels) -> None:
    """A new page of the session: the next-page model learns it, the summary counts it."""
    key = page_key(view.page_type, view.category)
    models.next_page.observe(summary.recent, key)
    summary.pages += 1
    summary.recent = [*summary.recent, key][-models.next_page.order:]
    summary.types[view.page_type] = summary.types.get(view.page_type, 0) + 1
    summary.engagement += seconds
    if view.page_type in CART_PAGES or view.page_type == "product":
        summary.product_engagement += seconds
    summary.cart_seen = summary.cart_seen or view.page_type in CART_PAGES
    summary.referred = summary.referred or (bool(view.referrer) and summary.pages == 1)
    summary.device = view.device


def end_session(state: VisitorSession, models: SessionModels, at: datetime
                ) -> EndedSession | None:
    """Score the pending predictions of ``state``'s session (it ended without
    reaching confirmation, unless it already had) and clear them (in place)."""
    if state.session_id is None:
        return None
    length = state.summary.seconds
    if state.pending:
        models.drifts.extend(models.outcomes.settle(state.pending, state.converted, length, at))
    ended = EndedSession(state.visitor_id, state.session_id, state.converted, length,
                         state.summary.pages, at)
    state.pending = []
    return ended


def is_idle(state: VisitorSession, models: SessionModels, watermark: datetime) -> bool:
    """Whether ``state``'s session has seen no page view within the timeout and its
    grace by ``watermark`` (the newest event time seen)."""
    return (state.session_id is not None and state.last_at is not None
            and watermark - state.last_at > models.session_timeout + models.idle_grace)


def close_idle(state: VisitorSession, models: SessionModels, watermark: datetime
               ) -> tuple[VisitorSession, EndedSession | None]:
    """End ``state``'s session if it is idle at ``watermark`` (a new state)."""
    if not is_idle(state, models, watermark):
        return state, None
    closed = replace(state, pending=list(state.pending))
    ended = end_session(closed, models, watermark)
    return replace(closed, session_id=None, views={}, pending=[], converted=False,
                   summary=fresh_summary(closed), started_at=None), ended


def fresh_summary(state: VisitorSession) -> SessionSummary:
    """The summary a visitor's next session starts from: what is known of the visitor."""
    return SessionSummary(visits=state.summary.visits + 1,
                          converted_before=state.summary.converted_before or state.converted)


def interest_scores(state: VisitorSession, at: datetime, half_life: timedelta
                    ) -> dict[str, float]:
    """The visitor's decayed interest per topic as of ``at``, strongest first."""
    scores = {topic: _decayed(score, since, at, half_life)
              for topic, (score, since) in state.interests.items()}
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))


def _decayed(score: float, since: datetime, at: datetime, half_life: timedelta) -> float:
    age = (at - since).total_seconds()
    return score * math.pow(2.0, -age / half_life.total_seconds())


def _add_interest(state: VisitorSession, view: PageSeen, weight: float,
                  models: SessionModels) -> None:
    if "profiling" not in view.consent:
        state.interests = {}
        return
    if weight == 0 or not view.topics:
        return
    share = weight / len(view.topics)
    for topic in view.topics:
        score, since = state.interests.get(topic, (0.0, view.at))
        # Scores are kept as of the later of the two times, so late reports add the same.
        newest = max(since, view.at)
        state.interests[topic] = (
            _decayed(score, since, newest, models.half_life)
            + _decayed(share, view.at, newest, models.half_life), newest)
    if len(state.interests) > MAX_TOPICS:
        at = max(since for _, since in state.interests.values())
        ranked = interest_scores(state, at, models.half_life)
        keep = [t for t in ranked if t in view.topics] + [t for t in ranked
                                                         if t not in view.topics]
        state.interests = {t: state.interests[t] for t in keep[:MAX_TOPICS]}
