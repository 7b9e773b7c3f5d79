"""The next best action in a session: what to offer a visitor or customer at a touchpoint now.

:func:`next_best_action` takes the subject's interests (a visitor's from
its page views, a customer's from the profile), the pages of the current
session and the catalogue, and answers the content to offer, the pages the
session is likely to go to next, the chance it converts, and the reasons.

The content offered is the valid catalogue item (``web`` channel) whose
topics the subject is most interested in, among those not already seen in
this session; an item listing the touchpoint among its slots wins a tie, then
the newest.  Without interests (an unknown or erased id, no consent) the
answer is the newest item for the touchpoint, marked not personalised.

The next pages are the worker's next-page model's top three after the
session's recent pages (:class:`~agents.core.sessions.NextPageModel`, a
variable-order Markov model with back-off; with no pages yet, its answer for
a session start), and the conversion chance is the session-conversion
model's prediction on the session's summary
(:class:`~agents.core.sessions.SessionOutcomes`).

>>> from datetime import UTC, datetime
>>> from schemas.records import ContentPublished, ContentVariant
>>> from agents.core.session_state import SessionModels
>>> from agents.core.sessions import SessionSummary
>>> t = datetime(2026, 3, 1, tzinfo=UTC)
>>> def item(cid, topic):
...     return ContentPublished(event_id=cid, content_id=cid, occurred_at=t, schema_version=1,
...         topics=[topic], channels=["web"], slots=["web-banner"], default_language="de",
...         variants=[ContentVariant(language="de", title=cid, url="https://x.example/")])
>>> items = {"golf-1": item("golf-1", "golf"), "tea-1": item("tea-1", "tea")}
>>> action = next_best_action({"golf": 0.9}, [], items, "web-banner", t, SessionModels(),
...                           SessionSummary())
>>> action.content_id, action.personalised, action.reasons[0]
('golf-1', True, 'interest in golf (0.90) matches golf-1')
>>> action.next_pages_model, action.conversion_model
('markov-backoff', 'session-conversion')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from agents.core.session_state import SessionModels, VisitorSession, fresh_summary
from agents.core.sessions import SessionSummary
from agents.core.visitors import ViewedPage
from schemas.records import ContentPublished

#: The models the answer names.
NEXT_PAGES_MODEL = "markov-backoff"
CONVERSION_MODEL = "session-conversion"


@dataclass(frozen=True)
class NextAction:
    """The answer for one session and touchpoint."""

    content_id: str | None
    score: float
    personalised: bool
    #: Up to three (page type, probability) pairs.
    next_pages: tuple[tuple[str, float], ...]
    next_pages_model: str
    conversion_probability: float
    conversion_model: str
    reasons: tuple[str, ...]


def _valid(item: ContentPublished, now: datetime) -> bool:
    return ("web" in item.channels
            and (item.valid_from is None or item.valid_from <= now)
            and (item.valid_until is None or now < item.valid_until))


def session_summary(state: VisitorSession | None, session_id: str) -> SessionSummary:
    """The summary of session ``session_id`` so far: ``state``'s when that is its
    current session, else that of a session just starting (what is known of the
    visitor, no pages yet)."""
    if state is None:
        return SessionSummary()
    if state.session_id == session_id:
        return state.summary
    return fresh_summary(state)


def next_best_action(interests: Mapping[str, float], session: Sequence[ViewedPage],
                     items: Mapping[str, ContentPublished], touchpoint: str, now: datetime,
                     models: SessionModels, summary: SessionSummary) -> NextAction:
    """The next best action for a session at ``touchpoint`` as of ``now`` (see the module doc).

    ``session`` are the current session's pages (their items are not offered
    again), ``models`` the worker's session models and ``summary`` the
    session's so far (:func:`session_summary`).
    """
    seen = {p.content_id for p in session if p.content_id}
    candidates = [i for i in items.values() if _valid(i, now) and i.content_id not in seen]
    reasons: list[str] = []

    def score(item: ContentPublished) -> float:
        return sum(interests.get(t, 0.0) for t in item.topics) / len(item.topics)

    ranked = sorted(candidates, key=lambda i: (
        -score(i), touchpoint not in i.slots, -i.occurred_at.timestamp(), i.content_id))
    chosen = ranked[0] if ranked else None
    best = score(chosen) if chosen is not None else 0.0
    personalised = chosen is not None and best > 0.0
    if chosen is None:
        reasons.append("no valid web item in the catalogue that this session has not seen")
    elif personalised:
        topic = max(chosen.topics, key=lambda t: interests.get(t, 0.0))
        reasons.append(f"interest in {topic} ({interests.get(topic, 0.0):.2f}) matches "
                       f"{chosen.content_id}")
    else:
        reasons.append("no interests held for this id: the newest item for the touchpoint, "
                       "not personalised")
    if seen:
        reasons.append(f"left out {len(seen)} item(s) already seen in this session")
    predicted = models.next_page.top(summary.recent, 3)
    after = f"after {summary.recent[-1]}" if summary.recent else "at a session start"
    if predicted:
        reasons.append(f"next page most likely {predicted[0][0]} ({predicted[0][1]:.0%}) "
                       f"{after}, from the next-page model")
    else:
        reasons.append("no next page predicted: the next-page model has seen no sessions yet")
    conversion, _, _ = models.outcomes.predict(summary)
    reasons.append(f"conversion chance {conversion:.0%} from the session-conversion model "
                   f"on this session's {summary.pages} page(s)")
    return NextAction(
        content_id=chosen.content_id if chosen is not None else None, score=best,
        personalised=personalised, next_pages=tuple(predicted),
        next_pages_model=NEXT_PAGES_MODEL, conversion_probability=conversion,
        conversion_model=CONVERSION_MODEL, reasons=tuple(reasons))
