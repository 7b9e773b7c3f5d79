"""Anonymous visitors: a profile of their own from the first page view, merged on login.

A :class:`VisitorState` is the projection of one visitor id's page views and
identity links, kept by the worker that owns the visitor's partition
(``page_views`` and ``identity_links`` are keyed by ``visitor_id``).

Rules (each a pure function of the events, so replay rebuilds the same state):

- **The first page view creates the visitor.** There is no "unknown visitor":
  a page view of a visitor id never seen starts its profile.
- **Cookie consent, strict by default.** A page view is used only when its
  ``consent`` lists ``profiling``, linked visitor or not (for a linked one the
  customer's consent decides too).  One that does not withdraws an anonymous
  visitor's profile as of its event time: every page viewed up to then is
  dropped and none dated up to then is added later while the visitor has a
  row (:attr:`VisitorState.revoked_at`).  A visitor who never consented has
  no stored state at all.  The bound: a withdrawal read after the visitor's
  link does not reach pages already merged into the customer (the
  customer's own consent governs those).
- **Bounded.** A visitor keeps its newest :attr:`VisitorRules.max_pages`
  pages; heartbeats (``page_view_id`` set) raise the engagement of the page
  they report on (the largest report counts) instead of adding a page.
- **Linked once.** An identity link ties the visitor to one customer: the
  visitor's pages leave it in a :class:`Merge` for the customer's owner, and
  every later page view of the visitor is handed on as a merge of its own,
  under the customer's consent (the visitor's cookie consent no longer
  decides).  A link to another customer once linked is refused
  (:class:`LinkRefused`): the first link on the visitor's partition wins,
  because a merge applied to a customer cannot be taken back.  A link from a
  visitor id to itself is refused too.
- **Expiry.** A visitor that never links is forgotten
  :attr:`VisitorRules.expire_after` after its latest page view, counted in
  event time (:func:`expires_at`); so is a linked visitor's link.

Engagement weights interest (:func:`engagement_weight`): a page read for
``full_engagement`` or longer counts 1, a shorter one in proportion, never
below ``min_weight``; a page with no engagement report yet counts
``unknown_weight``.

>>> from datetime import UTC, datetime, timedelta
>>> from schemas.records import PageView
>>> t = datetime(2026, 3, 1, tzinfo=UTC)
>>> def view(eid, minutes, seconds=None, consent=("profiling",)):
...     return PageView(event_id=eid, visitor_id="v-1", occurred_at=t + timedelta(minutes=minutes),
...                     schema_version=1, session_id="s-1", url="https://shop.example/p",
...                     page_type="product", device="mobile", content_id="golf-1",
...                     engagement_seconds=seconds, consent=list(consent))
>>> rules = VisitorRules()
>>> state = VisitorState("v-1")
>>> state = apply_page_view(state, view("e1", 0, 2.0), ["golf"], rules).state
>>> state = apply_page_view(state, view("e2", 1, 180.0), ["golf", "travel"], rules).state
>>> {k: round(v, 2) for k, v in interests(state, t + timedelta(minutes=1), rules).items()}
{'golf': 0.55, 'travel': 0.5}
>>> apply_page_view(state, view("e3", 2, consent=()), [], rules).state.pages
[]
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from schemas.records import IdentityLink, PageView

#: The cookie-consent purpose that allows a visitor profile.
PROFILING = "profiling"


@dataclass(frozen=True)
class VisitorRules:
    """How visitor profiles are kept (RELEVANZ_VISITOR_* settings)."""

    #: A visitor is forgotten this long after its latest page view (event time).
    expire_after: timedelta = timedelta(days=30)
    #: Half-life of a visitor's interest in a topic.
    half_life: timedelta = timedelta(days=7)
    #: Pages a visitor keeps at most (the newest).
    max_pages: int = 200
    #: Seconds on a page that count as a full read (weight 1).
    full_engagement: float = 60.0
    #: Weight of a bounce (the floor for very short engagement).
    min_weight: float = 0.05
    #: Weight of a page with no engagement report (yet).
    unknown_weight: float = 0.5


@dataclass(frozen=True)
class ViewedPage:
    """One page a visitor viewed, with the catalogue topics it had then."""

    #: The page view's id: its ``page_view_id`` when a heartbeat came first, else its event id.
    view_id: str
    occurred_at: datetime
    session_id: str
    url: str
    page_type: str
    content_id: str | None = None
    topics: tuple[str, ...] = ()
    engagement_seconds: float | None = None


@dataclass
class VisitorState:
    """What Relevanz keeps of one visitor id."""

    visitor_id: str
    #: Profiled pages, oldest first (by time, then view id).
    pages: list[ViewedPage] = field(default_factory=list)
    #: Event time of the latest page view without profiling consent (None: none).
    revoked_at: datetime | None = None
    #: Event time of the latest page view used (with profiling consent).
    last_seen: datetime | None = None
    #: The customer this visitor is linked to, the link's event id and time.
    customer_id: str | None = None
    link_event_id: str | None = None
    linked_at: datetime | None = None

    def is_empty(self) -> bool:
        """True when nothing is worth storing (no pages and no link)."""
        return not self.pages and self.customer_id is None


@dataclass(frozen=True)
class Merge:
    """Pages the customer's owner should apply to ``customer_id`` (the ``visitor_merges`` event).

    ``event_id`` is unique per link or forwarded page view and the same on
    replay, so the customer's owner applies each merge once.
    """

    event_id: str
    customer_id: str
    visitor_id: str
    occurred_at: datetime
    link_event_id: str
    pages: tuple[ViewedPage, ...]


@dataclass(frozen=True)
class LinkRefused:
    """Why an identity link was not applied, in words a sender can act on."""

    reason: str
    field: str


@dataclass(frozen=True)
class Outcome:
    """What one event did to a visitor."""

    state: VisitorState
    merge: Merge | None = None
    refused: LinkRefused | None = None


def merge_id(visitor_id: str, kind: str, event_id: str) -> str:
    """The event id of the merge a link or page view causes: short, and the same on replay.

    >>> merge_id("v-1", "link", "e-9") == merge_id("v-1", "link", "e-9")
    True
    >>> len(merge_id("v-1", "view", "e-9" * 60))
    37
    """
    digest = hashlib.blake2b(f"{visitor_id}\x00{event_id}".encode(), digest_size=16).hexdigest()
    return f"{kind}-{digest}"


def engagement_weight(seconds: float | None, rules: VisitorRules) -> float:
    """The interest weight of a page with ``seconds`` of engagement.

    >>> r = VisitorRules()
    >>> engagement_weight(2, r), engagement_weight(30, r), engagement_weight(600, r)
    (0.05, 0.5, 1.0)
    >>> engagement_weight(None, r)
    0.5
    """
    if seconds is None:
        return rules.unknown_weight
    return max(rules.min_weight, min(1.0, seconds / rules.full_engagement))


def expires_at(state: VisitorState, rules: VisitorRules) -> datetime | None:
    """When the visitor is forgotten (event time of its latest page view plus the expiry)."""
    times = [t for t in (state.last_seen, state.linked_at, state.revoked_at) if t is not None]
    return max(times) + rules.expire_after if times else None


def _page_of(view: PageView, topics: list[str] | None) -> ViewedPage:
    return ViewedPage(
        view_id=view.page_view_id or view.event_id, occurred_at=view.occurred_at,
        session_id=view.session_id, url=view.url, page_type=view.page_type,
        content_id=view.content_id, topics=tuple(topics or ()),
        engagement_seconds=view.engagement_seconds)


def _combined(old: ViewedPage, new: ViewedPage) -> ViewedPage:
    """One page from a page view and its heartbeats: earliest time, largest engagement."""
    first, second = sorted((old, new), key=lambda p: p.occurred_at)
    engaged = [p.engagement_seconds for p in (old, new) if p.engagement_seconds is not None]
    return replace(first, topics=first.topics or second.topics,
                   content_id=first.content_id or second.content_id,
                   engagement_seconds=max(engaged) if engaged else None)


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def apply_page_view(state: VisitorState, view: PageView, topics: list[str] | None,
                    rules: VisitorRules) -> Outcome:
    """The visitor after ``view`` (``topics``: its content's catalogue topics, if any).

    A linked visitor keeps no pages: the page goes to the customer as a merge.
    """
    if PROFILING not in view.consent:
        if state.customer_id is not None:
            return Outcome(state)  # not tracked: the customer's profile is not changed
        revoked = _later(state.revoked_at, view.occurred_at)
        kept = [p for p in state.pages if p.occurred_at > revoked]
        return Outcome(replace(state, pages=kept, revoked_at=revoked))
    page = _page_of(view, topics)
    seen = _later(state.last_seen, view.occurred_at)
    if state.customer_id is not None:
        assert state.link_event_id is not None
        merge = Merge(event_id=merge_id(state.visitor_id, "view", view.event_id),
                      customer_id=state.customer_id, visitor_id=state.visitor_id,
                      occurred_at=view.occurred_at, link_event_id=state.link_event_id,
                      pages=(page,))
        return Outcome(replace(state, last_seen=seen), merge=merge)
    if state.revoked_at is not None and view.occurred_at <= state.revoked_at:
        return Outcome(state)
    pages = {p.view_id: p for p in state.pages}
    known = pages.get(page.view_id)
    pages[page.view_id] = page if known is None else _combined(known, page)
    ordered = sorted(pages.values(), key=lambda p: (p.occurred_at, p.view_id))
    return Outcome(replace(state, pages=ordered[-rules.max_pages:], last_seen=seen))


def apply_link(state: VisitorState, link: IdentityLink) -> Outcome:
    """The visitor after an identity link, and the merge it sends to the customer.

    A repeated link to the same customer changes nothing; a link to another
    customer, or from a visitor id to itself, is refused.
    """
    if link.customer_id == link.visitor_id:
        return Outcome(state, refused=LinkRefused(
            "customer_id equals visitor_id: a visitor cannot be linked to itself; send "
            "the customer's id from the CRM or shop account", "customer_id"))
    if state.customer_id is not None:
        if state.customer_id == link.customer_id:
            return Outcome(state)
        return Outcome(state, refused=LinkRefused(
            f"visitor {link.visitor_id!r} is already linked to another customer (since "
            f"{state.linked_at.isoformat() if state.linked_at else '?'}); a visitor id "
            "belongs to one customer: give the browser a new visitor id after a "
            "logout or account switch", "customer_id"))
    merge = Merge(event_id=merge_id(state.visitor_id, "link", link.event_id),
                  customer_id=link.customer_id, visitor_id=state.visitor_id,
                  occurred_at=link.occurred_at, link_event_id=link.event_id,
                  pages=tuple(state.pages))
    linked = VisitorState(state.visitor_id, pages=[], revoked_at=None,
                          last_seen=state.last_seen,
                          customer_id=link.customer_id, link_event_id=link.event_id,
                          linked_at=link.occurred_at)
    return Outcome(linked, merge=merge)


def interests(state: VisitorState, at: datetime, rules: VisitorRules) -> dict[str, float]:
    """The visitor's decayed, engagement-weighted interest per topic as of ``at``.

    A page about *k* topics adds ``weight / k`` to each (as a click does for a
    customer); pages after ``at`` do not count.
    """
    scores: dict[str, float] = {}
    half_life_s = rules.half_life.total_seconds()
    for page in state.pages:
        if page.occurred_at > at or not page.topics:
            continue
        age_s = (at - page.occurred_at).total_seconds()
        weight = engagement_weight(page.engagement_seconds, rules) / len(page.topics)
        decayed = weight * math.pow(0.5, age_s / half_life_s)
        for topic in page.topics:
            scores[topic] = scores.get(topic, 0.0) + decayed
    return scores
