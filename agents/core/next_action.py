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

**Interim** (until the session models are wired into the worker): the next
pages are the subject's own most frequent page types after the current one
in its stored pages (``next_pages_model`` says ``interim:own-history``), and
the conversion chance is a fixed rule of the session's furthest step
(``conversion_model`` says ``interim:funnel-step``).

>>> from datetime import UTC, datetime
>>> from schemas.records import ContentPublished, ContentVariant
>>> t = datetime(2026, 3, 1, tzinfo=UTC)
>>> def item(cid, topic):
...     return ContentPublished(event_id=cid, content_id=cid, occurred_at=t, schema_version=1,
...         topics=[topic], channels=["web"], slots=["web-banner"], default_language="de",
...         variants=[ContentVariant(language="de", title=cid, url="https://x.example/")])
>>> items = {"golf-1": item("golf-1", "golf"), "tea-1": item("tea-1", "tea")}
>>> action = next_best_action({"golf": 0.9}, [], items, "web-banner", t)
>>> action.content_id, action.personalised, action.reasons[0]
('golf-1', True, 'interest in golf (0.90) matches golf-1')
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from agents.core.visitors import ViewedPage
from schemas.records import ContentPublished

#: Interim conversion chance by the session's furthest funnel step.
FUNNEL = {"confirmation": 1.0, "checkout": 0.45, "cart": 0.25, "product": 0.06,
          "category": 0.03, "search": 0.03}
FUNNEL_DEFAULT = 0.02


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


def next_pages(pages: Sequence[ViewedPage], current: str | None, k: int = 3
               ) -> list[tuple[str, float]]:
    """The page types that followed ``current`` most often in ``pages`` (interim model).

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 3, 1, tzinfo=UTC)
    >>> seen = [ViewedPage(str(i), t, "s", "/", kind) for i, kind in
    ...         enumerate(["home", "category", "product", "home", "category", "cart"])]
    >>> next_pages(seen, "home")
    [('category', 1.0)]
    """
    follows: Counter[str] = Counter()
    for before, after in itertools.pairwise(pages):
        if current is None or before.page_type == current:
            follows[after.page_type] += 1
    total = sum(follows.values())
    ranked = sorted(follows.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [(page, count / total) for page, count in ranked]


def next_best_action(interests: Mapping[str, float], session: Sequence[ViewedPage],
                     items: Mapping[str, ContentPublished], touchpoint: str, now: datetime,
                     history: Sequence[ViewedPage] = ()) -> NextAction:
    """The next best action for a session at ``touchpoint`` as of ``now`` (see the module doc).

    ``session`` are the current session's pages, ``history`` every stored page
    of the subject (for the interim next-page model).
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
    current = session[-1].page_type if session else None
    predicted = next_pages(history or session, current)
    if predicted:
        reasons.append(f"next page most likely {predicted[0][0]} ({predicted[0][1]:.0%}), "
                       "from this subject's own page history (interim model)")
    steps = [FUNNEL.get(p.page_type, FUNNEL_DEFAULT) for p in session]
    conversion = max(steps, default=FUNNEL_DEFAULT)
    reasons.append(f"conversion chance {conversion:.0%} from the session's furthest step "
                   "(interim rule)")
    return NextAction(
        content_id=chosen.content_id if chosen is not None else None, score=best,
        personalised=personalised, next_pages=tuple(predicted),
        next_pages_model="interim:own-history", conversion_probability=conversion,
        conversion_model="interim:funnel-step", reasons=tuple(reasons))
