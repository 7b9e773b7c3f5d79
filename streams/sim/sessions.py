"""Synthetic site sessions with known truth: page views for the session models.

Visitors (anonymous cookie ids) come back for one to three sessions.  Each
has a hidden favourite shop category and an intent to buy; a session walks
the site as a Markov chain whose next page depends on the current page,
the one before it, the visitor's category and intent: home or a landing page,
category pages, products of the category, the cart, checkout and, for the
intent to buy, the confirmation page.  Pages are in view for a time drawn
by page type (a bounce is a couple of seconds, an article minutes); about
half the page views send a second report with the same ``page_view_id``
when the visitor leaves (the engagement then counts from that report).
Some visitors log in part way through a session: their later page views
carry ``customer_id`` and the generator notes an identity link
(:attr:`SessionTruth.links`, plain dicts for the identity contract).

The truth kept per session (:class:`SessionTruth`): whether it converted
and its path of page keys.  Seeded: equal :class:`SessionConfig` give
byte-identical messages.

>>> gen = SessionGenerator(SessionConfig(seed=3, visitors=20))
>>> messages = list(gen.messages())
>>> {m.topic for m in messages}, len(gen.truth.sessions) >= 20
({'page_views'}, True)
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.core.session_state import (
    PageSeen,
    SessionModels,
    VisitorSession,
    close_idle,
    view_page,
)
from schemas.codec import decode, pack
from streams.sim.traffic import Message

CATEGORIES = ("shoes", "dresses", "outdoor", "tech", "books", "home", "sports", "beauty")
#: Typical seconds in view by page type (the median of a log-normal).
_DWELL = {"home": 8.0, "category": 15.0, "product": 45.0, "article": 120.0, "search": 10.0,
          "cart": 20.0, "checkout": 60.0, "confirmation": 15.0, "other": 10.0}
_START = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass(frozen=True)
class SessionConfig:
    """Everything the sessions depend on."""

    seed: int = 7
    visitors: int = 1000
    #: Share of visitors who accept personalisation and profiling cookies.
    consent_share: float = 0.85
    #: Share of visitors who hold an account and log in during some session.
    login_share: float = 0.3
    #: Share of visitors who came to buy.
    buyer_share: float = 0.35
    start: datetime = _START
    #: Over how long the visitors' sessions are spread.
    span: timedelta = timedelta(days=7)


@dataclass
class SessionTruth:
    """What happened, for measuring the models: per session, its path and outcome."""

    #: session_id -> (visitor_id, converted, page keys in order)
    sessions: dict[str, tuple[str, bool, list[str]]] = field(default_factory=dict)
    #: identity links (visitor to customer), as the identity contract would carry them
    links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def conversion_rate(self) -> float:
        """Share of sessions that reached the confirmation page."""
        if not self.sessions:
            return 0.0
        return sum(1 for _, c, _ in self.sessions.values() if c) / len(self.sessions)


class SessionGenerator:
    """Page views of synthetic sessions, in event-time order (see the module doc)."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.truth = SessionTruth()
        self._rng = random.Random(config.seed)

    def messages(self) -> Iterator[Message]:
        """Every page view message, ordered by event time."""
        events: list[tuple[datetime, str, dict[str, Any]]] = []
        for v in range(self.config.visitors):
            events.extend(self._visitor(f"v-{self.config.seed}-{v}"))
        events.sort(key=lambda e: (e[0], e[1]))
        for _, _, payload in events:
            yield Message("page_views", payload["visitor_id"].encode(), pack(payload))

    def _visitor(self, visitor_id: str) -> list[tuple[datetime, str, dict[str, Any]]]:
        rng, config = self._rng, self.config
        favourite = rng.choice(CATEGORIES)
        buyer = rng.random() < config.buyer_share
        consent = (["personalisation", "profiling"] if rng.random() < config.consent_share
                   else [])
        customer = f"c-{visitor_id}" if rng.random() < config.login_share else None
        device = rng.choice(("desktop", "desktop", "mobile", "mobile", "tablet"))
        at = config.start + config.span * rng.random()
        logged_in = False
        out: list[tuple[datetime, str, dict[str, Any]]] = []
        for s in range(rng.choice((1, 1, 2, 3))):
            session_id = f"{visitor_id}-s{s}"
            intent = buyer and rng.random() < 0.7
            path = self._path(favourite, intent)
            login_at = rng.randrange(len(path)) if customer and not logged_in else None
            # Those who came to buy arrive from a search or an ad more often.
            referred = rng.random() < (0.85 if intent else 0.25)
            referrer = (rng.choice(("https://search.example/", "https://ads.example/"))
                        if referred else None)
            keys: list[str] = []
            for i, (page_type, category) in enumerate(path):
                if login_at is not None and i == login_at:
                    logged_in = True
                    self.truth.links.append({"visitor_id": visitor_id, "customer_id": customer,
                                             "occurred_at": at.isoformat(), "via": "login",
                                             "event_id": f"{session_id}-link"})
                seconds = self._dwell(page_type, last=i == len(path) - 1)
                if intent and page_type in ("product", "cart"):
                    seconds *= 2.5  # a buyer reads the product page closely
                view_id = f"{session_id}-p{i}"
                payload: dict[str, Any] = {
                    "event_id": view_id, "visitor_id": visitor_id, "schema_version": 1,
                    "occurred_at": at.isoformat(), "session_id": session_id,
                    "page_view_id": view_id,
                    "url": f"https://shop.example/{page_type}/{category or ''}",
                    "page_type": page_type, "device": device, "consent": consent}
                if category:
                    payload["category"] = category
                if page_type == "product" and category:
                    payload["content_id"] = f"{category}-{rng.randrange(20)}"
                if i == 0 and referrer:
                    payload["referrer"] = referrer
                if logged_in and customer:
                    payload["customer_id"] = customer
                if rng.random() < 0.5:
                    # The report on leaving the page, with its engagement.
                    leave = at + timedelta(seconds=seconds)
                    out.append((leave, view_id + "-r", {
                        **payload, "event_id": view_id + "-leave",
                        "occurred_at": leave.isoformat(),
                        "engagement_seconds": round(seconds, 1)}))
                else:
                    payload["engagement_seconds"] = round(seconds, 1)
                out.append((at, view_id, payload))
                keys.append(f"{page_type}:{category}" if category else page_type)
                at += timedelta(seconds=seconds + rng.uniform(0.5, 3.0))
            self.truth.sessions[session_id] = (visitor_id, path[-1][0] == "confirmation", keys)
            at += timedelta(hours=rng.uniform(2, 72))
        return out

    def _dwell(self, page_type: str, last: bool) -> float:
        rng = self._rng
        if last and page_type != "confirmation" and rng.random() < 0.5:
            return rng.uniform(1.0, 4.0)  # a bounce on the way out
        return min(3600.0, _DWELL[page_type] * math.exp(rng.gauss(0.0, 0.6)))

    def _path(self, favourite: str, intent: bool) -> list[tuple[str, str | None]]:
        """One session's pages: a walk through the site until the visitor leaves."""
        rng = self._rng
        category = favourite if rng.random() < 0.8 else rng.choice(CATEGORIES)
        start = rng.random() * (0.8 if intent else 1.0)  # buyers land on products more
        page: tuple[str, str | None] = (
            ("home", None) if start < 0.45 else ("category", category) if start < 0.7
            else ("product", category) if start < 0.9 else ("article", category))
        if intent and start < 0.45 and rng.random() < 0.5:
            page = ("search", None)  # ... or search for what they came for
        path = [page]
        previous: tuple[str, str | None] | None = None
        while len(path) < 40:
            following = self._next(page, previous, category, intent)
            if following is None:
                break
            previous, page = page, following
            path.append(page)
            if page[0] == "confirmation":
                break
        return path

    def _next(self, page: tuple[str, str | None], previous: tuple[str, str | None] | None,
              category: str, intent: bool) -> tuple[str, str | None] | None:
        rng = self._rng
        kind = page[0]
        r = rng.random()
        if kind == "home":
            return (("category", category) if r < 0.6 else ("search", None) if r < 0.75
                    else ("article", category) if r < 0.85 else None)
        if kind == "search":
            return ("product", category) if r < 0.7 else ("category", category) if r < 0.85 \
                else None
        if kind == "article":
            return (("article", category) if r < 0.35 else ("product", category) if r < 0.6
                    else None)
        if kind == "category":
            if previous is not None and previous[0] == "product":
                # Back from a product: another product of the category, or done.
                return ("product", category) if r < 0.75 else None
            return (("product", category) if r < 0.7 else ("category", rng.choice(CATEGORIES))
                    if r < 0.8 else None)
        if kind == "product":
            to_cart = 0.45 if intent else 0.06
            if previous is not None and previous[0] == "cart":
                return ("cart", None) if r < 0.7 else None  # checked the item again
            if r < to_cart:
                return ("cart", None)
            return (("product", category) if r < to_cart + 0.3
                    else ("category", category) if r < to_cart + 0.5 else None)
        if kind == "cart":
            return (("checkout", None) if r < (0.75 if intent else 0.1)
                    else ("product", category) if r < 0.85 else None)
        if kind == "checkout":
            return ("confirmation", None) if r < (0.85 if intent else 0.05) else None
        return None


def page_seen(payload: dict[str, Any], topics: tuple[str, ...] = ()) -> PageSeen:
    """The session rules' view of one page view payload (as the generator writes it)."""
    category = payload.get("category")
    return PageSeen(
        payload["event_id"], datetime.fromisoformat(payload["occurred_at"]),
        payload["session_id"], payload["page_type"], category, payload.get("page_view_id"),
        payload["device"], payload.get("referrer"), payload.get("engagement_seconds"),
        tuple(payload.get("consent", ())), topics or ((category,) if category else ()),
        payload.get("customer_id"))


def evaluate_sessions(config: SessionConfig, models: SessionModels | None = None
                      ) -> dict[str, Any]:
    """The session models' progressive-validation figures on ``config``'s sessions.

    Runs the same pure rules as the worker's session stage, in one process
    and event-time order, with every session closed at the end.
    """
    models = models or SessionModels()
    generator = SessionGenerator(config)
    states: dict[str, VisitorSession] = {}
    last = config.start
    for message in generator.messages():
        payload = decode(message.value)
        view = page_seen(payload)
        visitor = payload["visitor_id"]
        states[visitor], _ = view_page(states.get(visitor) or VisitorSession(visitor), view,
                                       models)
        last = max(last, view.at)
    for state in states.values():
        close_idle(state, models, last + models.session_timeout + models.idle_grace * 2)
    return session_report(models, generator.truth)


def session_report(models: SessionModels, truth: SessionTruth | None = None
                   ) -> dict[str, Any]:
    """The figures ``relevanz demo --json`` reports for the session models."""
    quality = models.next_page.quality()
    conversion, remaining = models.outcomes.quality()
    report = {
        "next_page_hit1": quality["hit1"], "next_page_hit3": quality["hit3"],
        "next_page_hit3_popular": quality["hit3_popular"],
        "next_page_hit3_random": quality["hit3_random"],
        "next_page_examples": quality["examples"],
        "session_conversion_auc": conversion["roc_auc"] if conversion["examples"] else None,
        "session_conversion_examples": conversion["examples"],
        "session_remaining_mae_s": remaining["mae_s"],
        "session_remaining_mae_s_mean_baseline": remaining["mae_s_mean_baseline"],
    }
    if truth is not None:
        report["session_conversion_rate"] = round(truth.conversion_rate, 4)
    return report
