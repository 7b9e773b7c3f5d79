"""Synthetic shop and newsletter traffic whose ground truth is known.

It drives ``relevanz demo``, the integration tests and the benchmarks, and it
lets decision quality be measured: the generator knows every customer's
hidden interests, locale, usual engagement hour, purchase rate and consent
state, and every content item's topics (:class:`GroundTruth`).

The stream is what upstream systems would put on the wire: :class:`Message`
values (logical topic, key, bytes).  First the content catalogue, then
customers appear over time: a profile, a consent decision, then sessions of
clicks driven by their interests, some ending in a purchase, with occasional
consent changes, erasure requests and profile updates.  Customers lapse the
way real buyers do (BG/NBD): after each purchase a customer stops for good
with a drop-out chance of their own (``CustomerTruth.dropout``), so recency
tells the lapsed from the active.  A share of messages is
malformed (labelled with its kind; each one is rejected by
:func:`schemas.validation.parse_message`) and a share are redeliveries of an
earlier valid message.

Everything follows from :class:`TrafficConfig`: one seeded generator and no
clock (event time ticks by ``mean_gap_s`` per message from ``start``), so one
config gives byte-identical messages and ``messages(n)`` is a prefix of
``messages(n + k)``.

>>> from datetime import UTC, datetime
>>> end = datetime(2026, 3, 1, tzinfo=UTC)
>>> config = TrafficConfig.ending_at(end, n=500, seed=3, catalogue_size=5)
>>> messages = list(TrafficGenerator(config).messages(500))
>>> len(messages), messages[0].topic, messages[5].topic
(500, 'content', 'profiles')
"""

from __future__ import annotations

import json
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from random import Random
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from schemas.codec import pack
from schemas.records import CHANNELS, PURPOSES
from schemas.topics import TOPICS as CONTRACTS
from streams.errors import ConfigError

TOPICS = ("fashion", "sports", "outdoor", "tech", "home", "beauty",
          "food", "travel", "kids", "books", "music", "garden")
SLOTS = ("newsletter-block", "landing-page", "web-banner", "app-card")


@dataclass(frozen=True)
class Locale:
    """A market: locale, language, country, time zone, currency, share of customers."""

    tag: str
    language: str
    country: str
    time_zone: str
    currency: str
    weight: float


LOCALES = (
    Locale("de-DE", "de", "DE", "Europe/Berlin", "EUR", 0.50),
    Locale("de-AT", "de", "AT", "Europe/Vienna", "EUR", 0.06),
    Locale("en-GB", "en", "GB", "Europe/London", "GBP", 0.14),
    Locale("fr-FR", "fr", "FR", "Europe/Paris", "EUR", 0.10),
    Locale("nl-NL", "nl", "NL", "Europe/Amsterdam", "EUR", 0.08),
    Locale("it-IT", "it", "IT", "Europe/Rome", "EUR", 0.07),
    Locale("es-ES", "es", "ES", "Europe/Madrid", "EUR", 0.05),
)
_NEW_IN = {"de": "Neu", "en": "New in", "fr": "Nouveau", "nl": "Nieuw", "it": "Novità",
           "es": "Novedades"}
_PRICE = {"fashion": 49, "sports": 59, "outdoor": 89, "tech": 199, "home": 39, "beauty": 19,
          "food": 9, "travel": 349, "kids": 24, "books": 14, "music": 19, "garden": 29}
# Local hours people engage: commute, lunch and a strong evening peak.
_HOUR_WEIGHTS = (1, 1, 0, 0, 0, 1, 3, 6, 7, 5, 4, 4, 6, 5, 4, 4, 5, 6, 8, 9, 9, 7, 4, 2)
_SESSION_CHANNELS = ("web", "email", "app", "push")
_SESSION_CUM = tuple(accumulate((0.45, 0.30, 0.20, 0.05)))
_MALFORMED_TOPICS = ("clicks", "purchases", "consents", "profiles")
_MALFORMED_CUM = tuple(accumulate((0.55, 0.15, 0.15, 0.15)))
_NOISE = 0.1  # share of clicks on a random topic: browsing is never purely interest-driven
_CATALOGUE_CLICK = 0.8  # the rest goes to shop category pages outside the catalogue
_SAME_HOUR = 0.5  # share of sessions given to customers whose usual hour it is
_CONSENT_CHANGE = 0.01
_ERASURE = 0.0005
_PROFILE_UPDATE = 0.02
_RECENT = 1000  # redeliveries repeat one of the last this many valid customer events
_DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Message:
    """One message as a producer sends it: logical topic, key and value bytes."""

    #: Logical topic name (:data:`schemas.topics.TOPICS`).
    topic: str
    #: ``customer_id`` (``content_id`` on ``content``) as UTF-8; other bytes or None if malformed.
    key: bytes | None
    #: msgpack, or JSON for a ``json_share`` of valid messages.
    value: bytes
    #: None for a valid event, otherwise its kind (one of :data:`MALFORMED_KINDS`).
    malformed: str | None = None
    #: True for a redelivery: key and value identical to an earlier valid message.
    duplicate: bool = False


@dataclass(frozen=True)
class TrafficConfig:
    """Everything the stream depends on; equal configs give byte-identical streams."""

    seed: int = 7
    customers: int = 1000
    catalogue_size: int = 50
    #: Shares of all messages after the catalogue (which is always valid and sent once).
    malformed_share: float = 0.02
    duplicate_share: float = 0.01
    #: Share of valid messages encoded as JSON instead of msgpack.
    json_share: float = 0.1
    #: Event time of the first message; see :meth:`ending_at` for live traffic.
    start: datetime = _DEFAULT_START
    #: Event time advances by exactly this much per message.
    mean_gap_s: float = 1.0
    topics: tuple[str, ...] = TOPICS
    locales: tuple[Locale, ...] = LOCALES

    def __post_init__(self) -> None:
        for name in ("malformed_share", "duplicate_share", "json_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected 0 to 1")
        if self.malformed_share + self.duplicate_share > 1.0:
            raise ConfigError("malformed_share + duplicate_share: must not exceed 1")
        if self.customers < 1 or self.catalogue_size < 1:
            raise ConfigError("customers and catalogue_size: need at least 1")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ConfigError(f"start: {self.start.isoformat()} has no time zone")
        if not 0.0 <= self.mean_gap_s < 1e9:
            raise ConfigError(f"mean_gap_s: got {self.mean_gap_s}, expected 0 or more seconds")
        if not self.topics or len(set(self.topics)) != len(self.topics):
            raise ConfigError("topics: need at least one, without repeats")
        if not self.locales or min(loc.weight for loc in self.locales) <= 0:
            raise ConfigError("locales: need at least one, each with a positive weight")

    def span(self, n: int) -> timedelta:
        """Event time from the first to the last of ``n`` messages.

        >>> TrafficConfig(mean_gap_s=0.5).span(11)
        datetime.timedelta(seconds=5)
        """
        return timedelta(seconds=max(n - 1, 0) * self.mean_gap_s)

    @classmethod
    def ending_at(cls, end: datetime, n: int, **fields: Any) -> TrafficConfig:
        """A config whose ``n``-th message occurs at ``end`` (pass ``now`` for live traffic)."""
        config = cls(**fields)
        return replace(config, start=end - config.span(n))


@dataclass(frozen=True)
class CustomerTruth:
    """What the engine should discover about one customer."""

    customer_id: str
    #: Hidden interest weight per topic; the weights sum to 1.
    interests: dict[str, float]
    locale: Locale
    #: Local hour at which this person usually engages.
    active_hour: int
    #: Chance that one of this person's sessions ends in a purchase.
    purchase_rate: float
    #: Relative session frequency (1 is typical, up to 5 for heavy users).
    activity: int
    birth_year: int | None
    gender: str | None
    #: Chance of stopping for good after each purchase (BG/NBD's drop-out, drawn per
    #: customer from Beta(1, 4): mean 0.2, some customers stay for a long time).
    dropout: float = 0.0

    def top_interests(self, k: int = 3) -> list[str]:
        """The ``k`` topics with the highest hidden weight, strongest first."""
        return sorted(self.interests, key=self.interests.__getitem__, reverse=True)[:k]


@dataclass(frozen=True)
class ContentTruth:
    """A catalogue item as published."""

    content_id: str
    topics: tuple[str, ...]
    #: Languages of its variants, default first.
    languages: tuple[str, ...]
    channels: tuple[str, ...]
    slots: tuple[str, ...]
    campaign_id: str | None
    valid_from: datetime
    valid_until: datetime

    def url(self, language: str) -> str:
        """Address of the variant in ``language``."""
        return f"https://shop.example/{language}/{self.topics[0]}/{self.content_id}"


@dataclass
class GroundTruth:
    """The hidden world behind the stream.

    ``consents`` and ``erased`` follow the messages yielded so far by the
    latest :meth:`TrafficGenerator.messages` call (redeliveries change nothing).
    """

    customers: dict[str, CustomerTruth]
    content: dict[str, ContentTruth]
    #: Purposes each appeared customer has granted.
    consents: dict[str, frozenset[str]] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)
    #: Customers who stopped for good after a purchase (they send nothing more).
    lapsed: set[str] = field(default_factory=set)


class _Pending(NamedTuple):
    topic: str
    customer_id: str
    payload: dict[str, Any]
    consent: frozenset[str] | None  # the customer's granted purposes once this is emitted


class TrafficGenerator:
    """A seeded, realistic stream of input messages with its :attr:`truth`."""

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        rng = Random(config.seed)
        self._start = config.start.astimezone(UTC)
        content = [self._draw_content(rng, i) for i in range(config.catalogue_size)]
        # Drop-out chances come from a generator of their own: the rest of the world
        # keeps its draws.
        self._dropouts = Random(f"{config.seed}-dropout")
        customers = [self._draw_customer(rng, i) for i in range(config.customers)]
        self._truth = GroundTruth({c.customer_id: c for c in customers},
                                  {c.content_id: c for c in content})
        self._cum = {c.customer_id: list(accumulate(c.interests.values())) for c in customers}
        offset = {loc.time_zone: _hours_ahead_of_utc(loc.time_zone, self._start)
                  for loc in config.locales}
        self._utc_hour = {c.customer_id: (c.active_hour - offset[c.locale.time_zone]) % 24
                          for c in customers}  # each customer's usual hour in UTC
        # Every run replays the stream from here, so world and stream share one seed.
        self._stream_state = rng.getstate()

    @property
    def truth(self) -> GroundTruth:
        """The ground truth (see :class:`GroundTruth`)."""
        return self._truth

    def span(self, n: int) -> timedelta:
        """Event time from the first to the last of ``n`` messages."""
        return self.config.span(n)

    def messages(self, n: int) -> Iterator[Message]:
        """Exactly ``n`` messages from the beginning of the stream."""
        if n < 0:
            raise ValueError(f"n: got {n}, expected 0 or more")
        rng = Random()
        rng.setstate(self._stream_state)
        return _Run(self, rng).messages(n)

    def _draw_content(self, rng: Random, i: int) -> ContentTruth:
        topics = self.config.topics
        languages = tuple(dict.fromkeys(loc.language for loc in self.config.locales))
        # The first items cover every topic once, so each interest has something to click.
        first = topics[i] if i < len(topics) else rng.choice(topics)
        chosen: tuple[str, ...] = (first,)
        if len(topics) > 1 and rng.random() < 0.4:
            chosen += (rng.choice([t for t in topics if t != first]),)
        default = languages[0] if rng.random() < 0.7 else rng.choice(languages)
        others = [lang for lang in languages if lang != default]
        extra = rng.sample(others, min(len(others), rng.randint(1, 3)))
        return ContentTruth(
            content_id=f"content-{i + 1:04d}",
            topics=chosen,
            languages=(default, *extra),
            channels=tuple(sorted(rng.sample(CHANNELS, rng.randint(1, 3)))),
            slots=tuple(sorted(rng.sample(SLOTS, rng.randint(1, 3)))),
            campaign_id=f"camp-{rng.randrange(1 + i // 8):03d}" if rng.random() < 0.3 else None,
            valid_from=self._start - timedelta(hours=rng.randint(24, 1440)),
            valid_until=self._start + timedelta(hours=rng.randint(168, 4320)),
        )

    def _draw_customer(self, rng: Random, i: int) -> CustomerTruth:
        topics, locales = self.config.topics, self.config.locales
        locale = rng.choices(locales, weights=[loc.weight for loc in locales])[0]
        # Dirichlet-like: a small sparse background plus a few strong interests,
        # the strong ones favouring the more popular (earlier) topics.
        raw = [rng.gammavariate(0.2, 1.0) * 0.1 for _ in topics]
        popularity = [1.0 / (rank + 1) ** 0.6 for rank in range(len(topics))]
        for _ in range(min(len(topics), rng.choice((1, 2, 2, 3, 3, 4)))):
            raw[rng.choices(range(len(topics)), weights=popularity)[0]] += rng.gammavariate(4, 1)
        total = sum(raw)
        dropout = self._dropouts.betavariate(1.0, 4.0)
        return CustomerTruth(
            customer_id=f"cust-{i + 1:06d}",
            interests={t: w / total for t, w in zip(topics, raw, strict=True)},
            locale=locale,
            active_hour=rng.choices(range(24), weights=_HOUR_WEIGHTS)[0],
            purchase_rate=rng.betavariate(2, 10),
            activity=min(5, int(rng.paretovariate(1.5))),
            birth_year=rng.randint(1945, 2008) if rng.random() < 0.9 else None,
            gender=rng.choice(("female", "male", "diverse")) if rng.random() < 0.6 else None,
            dropout=dropout,
        )


class _Run:
    """The state of one pass over the stream."""

    def __init__(self, gen: TrafficGenerator, rng: Random) -> None:
        self.config, self.truth, self.rng, self.random = gen.config, gen.truth, rng, rng.random
        self.truth.consents.clear()
        self.truth.erased.clear()
        self.truth.lapsed.clear()
        # Drop-out draws have a generator of their own: they add no draws to the stream's.
        self.lapse = Random(f"{self.config.seed}-lapse").random
        self.customers = list(self.truth.customers.values())
        self.content = list(self.truth.content.values())
        self.by_topic: dict[str, list[ContentTruth]] = {t: [] for t in self.config.topics}
        for item in self.content:
            for topic in item.topics:
                self.by_topic[topic].append(item)
        self.cum, self.utc_hour = gen._cum, gen._utc_hour
        self.start, self.gap = gen._start, gen.config.mean_gap_s
        self.seen = 0  # customers appeared so far, in id order
        self.active: list[str] = []  # appeared, not erased; repeated by activity
        self.by_hour: list[list[str]] = [[] for _ in range(24)]
        self.n_active = 0
        self.sessions: list[list[_Pending]] = []  # open sessions, next event last
        self.busy: set[str] = set()
        self.granted: dict[str, frozenset[str]] = {}  # as queued, ahead of truth.consents
        self.recent: list[Message] = []
        self.counter = self.orders = self.session_no = self.recorded = 0
        self.width = max(1, min(8, self.config.customers // 4))  # concurrent sessions

    def messages(self, n: int) -> Iterator[Message]:
        config, rng = self.config, self.rng
        catalogue, bad = len(self.content), config.malformed_share
        dup = bad + config.duplicate_share
        for i in range(n):
            when = self.start + timedelta(seconds=i * self.gap)
            if i < catalogue:
                yield self._content(self.content[i], when)
                continue
            r = rng.random()
            if r < bad:
                yield self._malformed(when)
            elif r < dup and self.recent:
                yield replace(self._pick(self.recent), duplicate=True)
            else:
                yield self._next_event(when)

    # --- encoding -------------------------------------------------------------

    def _head(self, customer_id: str, when: datetime) -> dict[str, Any]:
        self.counter += 1
        return {"event_id": f"evt-{self.config.seed}-{self.counter:09d}",
                "customer_id": customer_id, "occurred_at": when.isoformat(),
                "schema_version": 1}

    def _encode(self, payload: Any) -> bytes:
        if self.rng.random() < self.config.json_share:
            return json.dumps(payload).encode()
        return pack(payload)

    def _content(self, item: ContentTruth, when: datetime) -> Message:
        payload = self._head("", when)
        del payload["customer_id"]
        payload |= {
            "content_id": item.content_id, "topics": list(item.topics),
            "channels": list(item.channels), "slots": list(item.slots),
            "variants": [{"language": lang, "url": item.url(lang),
                          "title": f"{_NEW_IN.get(lang, 'New')}: {item.topics[0]} "
                                   f"{item.content_id[-4:]}"} for lang in item.languages],
            "default_language": item.languages[0], "campaign_id": item.campaign_id,
            "valid_from": item.valid_from.isoformat(),
            "valid_until": item.valid_until.isoformat(),
        }
        return Message("content", item.content_id.encode(), self._encode(payload))

    def _next_event(self, when: datetime) -> Message:
        for _ in range(self.width - len(self.sessions)):
            self._open_session(when.hour)
        i = int(self.random() * len(self.sessions))
        session = self.sessions[i]
        topic, customer_id, payload, consent = session.pop()
        if not session:
            self.sessions[i] = self.sessions[-1]
            self.sessions.pop()
            self.busy.discard(customer_id)
        self.counter += 1
        payload["event_id"] = f"evt-{self.config.seed}-{self.counter:09d}"
        payload["occurred_at"] = when.isoformat()
        if consent is not None:
            self.truth.consents[customer_id] = consent
        message = Message(topic, customer_id.encode(), self._encode(payload))
        if payload.get("action") == "erasure_requested":
            self.truth.erased.add(customer_id)
            # No redelivery of an erased customer's events: whether a worker counts one as
            # a duplicate or as erased is its own choice, and the demo compares exact counts.
            self.recent = [m for m in self.recent if m.key != message.key]
        elif len(self.recent) < _RECENT:
            self.recent.append(message)
        else:  # a ring: redeliveries follow their original closely, as after a rebalance
            self.recent[self.recorded % _RECENT] = message
        self.recorded += 1
        return message

    # --- sessions -------------------------------------------------------------

    def _open_session(self, hour: int) -> None:
        """Queue the next session of a new or returning customer, unless they are busy."""
        rng, total = self.rng, self.config.customers
        if self.seen < total and rng.random() < (total - self.seen) / total:
            c = self.customers[self.seen]
            self.seen += 1
            self.n_active += 1
            self.active += [c.customer_id] * c.activity
            self.by_hour[self.utc_hour[c.customer_id]] += [c.customer_id] * c.activity
            self.granted[c.customer_id] = frozenset()
            # Sign-up happens during a visit: profile and consent come first.
            events = [self._profile(c), self._first_consent(c), *self._browse(c)]
        else:
            pool = self.by_hour[hour] if rng.random() < _SAME_HOUR else []
            pool = pool or self.active
            if not pool:
                return
            c = self.truth.customers[self._pick(pool)]
            if c.customer_id in self.busy:
                return
            events = self._returning(c)
        self.busy.add(c.customer_id)
        events.reverse()
        self.sessions.append(events)

    def _returning(self, c: CustomerTruth) -> list[_Pending]:
        rng, cid = self.rng, c.customer_id
        events: list[_Pending] = []
        r = rng.random()
        if r < _ERASURE and self.n_active > 1:  # the last customer stays, so the stream goes on
            self._leave(cid)
            return [self._consent(c, "erasure_requested", (), frozenset(), "privacy-request")]
        if r < _CONSENT_CHANGE:
            events.append(self._consent_change(c))
        if rng.random() < _PROFILE_UPDATE:
            events.append(self._profile(c))
        return events + self._browse(c)

    def _browse(self, c: CustomerTruth) -> list[_Pending]:
        rng, cid = self.rng, c.customer_id
        channel = self._weighted(_SESSION_CHANNELS, _SESSION_CUM)
        if channel in ("email", "push") and channel not in self.granted[cid]:
            channel = "web"  # no newsletter or push reaches a customer who did not consent
        tracked = rng.random() < 0.85  # some shop pages send no session metadata
        self.session_no += 1
        session = (channel, "mobile" if channel in ("app", "push") else
                   self._pick(("desktop", "desktop", "mobile", "tablet")),
                   f"sess-{self.config.seed}-{self.session_no}") if tracked else None
        events, topics, campaign = [], [], None
        for _ in range(1 + min(int(rng.expovariate(0.6)), 11)):
            click = self._click(c, session)
            topics.append(click["topics"][0])
            campaign = click.get("campaign_id", campaign)
            events.append(_Pending("clicks", cid, click, None))
        if rng.random() < c.purchase_rate:
            events.append(_Pending("purchases", cid, self._purchase(c, topics, campaign), None))
            # As in BG/NBD: after a purchase the customer may stop for good (the last
            # customer stays, so the stream goes on).
            if self.lapse() < c.dropout and self.n_active > 1:
                self._leave(cid)
                self.truth.lapsed.add(cid)
        return events

    def _leave(self, cid: str) -> None:
        """No more sessions for ``cid`` (erased or lapsed)."""
        self.n_active -= 1
        self.active = [a for a in self.active if a != cid]
        hour = self.by_hour[self.utc_hour[cid]]
        hour[:] = [a for a in hour if a != cid]

    def _topic(self, c: CustomerTruth) -> str:
        topics = self.config.topics
        if self.random() < _NOISE:
            return self._pick(topics)
        return self._weighted(topics, self.cum[c.customer_id])

    # Several times cheaper than rng.choice and rng.choices on this hot path; as deterministic.
    def _pick(self, seq: Sequence[_T]) -> _T:
        return seq[int(self.random() * len(seq))]

    def _weighted(self, seq: Sequence[_T], cum_weights: Sequence[float]) -> _T:
        return seq[bisect(cum_weights, self.random() * cum_weights[-1], 0, len(seq) - 1)]

    # --- payloads (event_id and occurred_at are set when emitted) -------------------

    def _blank(self, cid: str) -> dict[str, Any]:
        return {"event_id": "", "customer_id": cid, "occurred_at": "", "schema_version": 1}

    def _click(self, c: CustomerTruth, session: tuple[str, str, str] | None) -> dict[str, Any]:
        rng, lang = self.rng, c.locale.language
        topic = self._topic(c)
        payload = self._blank(c.customer_id)
        items = self.by_topic[topic]
        if items and rng.random() < _CATALOGUE_CLICK:
            item = self._pick(items)
            payload["content_id"] = item.content_id
            payload["url"] = item.url(lang if lang in item.languages else item.languages[0])
            payload["topics"] = list(item.topics)
            if item.campaign_id and session and session[0] in ("email", "push"):
                payload["campaign_id"] = item.campaign_id
        else:
            payload["url"] = f"https://shop.example/{lang}/c/{topic}"
            payload["topics"] = [topic]
        if session:
            payload["channel"], payload["device"], payload["session_id"] = session
        return payload

    def _purchase(self, c: CustomerTruth, topics: list[str], campaign: str | None
                  ) -> dict[str, Any]:
        rng = self.rng
        self.orders += 1
        items: list[dict[str, Any]] = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            topic = rng.choice(topics) if topics and rng.random() < 0.8 else self._topic(c)
            price = max(1, int(_PRICE.get(topic, 30) * rng.uniform(0.4, 2.0))) - 0.01
            items.append({"product_id": f"sku-{topic}-{rng.randrange(500):03d}",
                          "quantity": 1 if rng.random() < 0.85 else rng.randint(2, 3),
                          "unit_price": round(price, 2), "topics": [topic]})
        payload = self._blank(c.customer_id) | {
            "order_id": f"order-{self.config.seed}-{self.orders:08d}", "items": items,
            "total": round(sum(i["quantity"] * i["unit_price"] for i in items), 2),
            "currency": c.locale.currency,
        }
        if campaign:
            payload["campaign_id"] = campaign
        return payload

    def _consent(self, c: CustomerTruth, action: str, purposes: tuple[str, ...] | frozenset[str],
                 after: frozenset[str], source: str) -> _Pending:
        payload = self._blank(c.customer_id) | {
            "action": action, "purposes": [p for p in PURPOSES if p in purposes],
            "source": source,
            "legal_basis": "legal_obligation" if action == "erasure_requested" else "consent",
        }
        self.granted[c.customer_id] = after
        return _Pending("consents", c.customer_id, payload, after)

    def _first_consent(self, c: CustomerTruth) -> _Pending:
        rng, source = self.rng, "consent-banner"
        r = rng.random()
        if r < 0.6:  # accept all, though few want text messages
            chosen = frozenset(p for p in PURPOSES if p != "sms" or rng.random() < 0.3)
        elif r < 0.9:  # pick some
            chosen = frozenset(rng.sample(PURPOSES, rng.randint(1, 4)))
        else:  # reject all
            return self._consent(c, "revoked", PURPOSES, frozenset(), source)
        return self._consent(c, "granted", chosen, chosen, source)

    def _consent_change(self, c: CustomerTruth) -> _Pending:
        rng, granted = self.rng, self.granted[c.customer_id]
        missing = [p for p in PURPOSES if p not in granted]
        if granted and (rng.random() < 0.6 or not missing):
            gone = frozenset(rng.sample(sorted(granted), min(len(granted), rng.randint(1, 2))))
            source = "newsletter-unsubscribe" if gone == {"email"} else "preference-centre"
            return self._consent(c, "revoked", gone, granted - gone, source)
        more = frozenset(rng.sample(missing, min(len(missing), rng.randint(1, 2))))
        return self._consent(c, "granted", more, granted | more, "preference-centre")

    def _profile(self, c: CustomerTruth) -> _Pending:
        loc = c.locale
        payload = self._blank(c.customer_id) | {
            "locale": loc.tag, "language": loc.language, "time_zone": loc.time_zone,
            "country": loc.country,
            "attributes": {"loyalty_tier": self.rng.choice(("bronze", "silver", "gold")),
                           "newsletter_format": self.rng.choice(("html", "text"))},
        }
        if c.birth_year is not None:
            payload["birth_year"] = c.birth_year
        if c.gender is not None:
            payload["gender"] = c.gender
        return _Pending("profiles", c.customer_id, payload, None)

    # --- malformed input ------------------------------------------------------

    def _malformed(self, when: datetime) -> Message:
        rng = self.rng
        topic = rng.choices(_MALFORMED_TOPICS, cum_weights=_MALFORMED_CUM)[0]
        kind = rng.choice(MALFORMED_KINDS_BY_TOPIC[topic])
        c = self.customers[rng.randrange(len(self.customers))]
        payload = self._valid_payload(topic, c)
        payload |= self._head(c.customer_id, when)
        key: bytes | None = c.customer_id.encode()
        value: bytes | None = None
        if kind == "garbage-bytes":  # 0xc1 is never valid msgpack and is not JSON
            value = b"\xc1" + rng.randbytes(rng.randint(4, 120))
        elif kind == "empty-value":
            value = b""
        elif kind == "truncated-msgpack":
            raw = pack(payload)
            value = raw[: rng.randrange(1, len(raw))]
        elif kind == "invalid-json":
            text = json.dumps(payload)
            value = (text[: rng.randrange(1, len(text) - 1)] if rng.random() < 0.5
                     else repr(payload)).encode()  # cut off, or a Python dict's repr
        elif kind == "not-a-map":
            value = pack([payload])  # a batch where one event was expected
        else:
            key = _break(kind, topic, payload, c.customer_id.encode(), when, rng)
        return Message(topic, key, value if value is not None else self._encode(payload), kind)

    def _valid_payload(self, topic: str, c: CustomerTruth) -> dict[str, Any]:
        if topic == "clicks":
            return self._click(c, ("web", "desktop", "sess-0"))
        if topic == "purchases":
            return self._purchase(c, [], None)
        if topic == "profiles":
            return self._profile(c).payload
        return {**self._blank(c.customer_id), "action": "granted", "purposes": ["email"],
                "source": "consent-banner", "legal_basis": "consent"}


def _hours_ahead_of_utc(time_zone: str, when: datetime) -> int:
    offset = when.astimezone(ZoneInfo(time_zone)).utcoffset() or timedelta()
    return round(offset.total_seconds() / 3600)


def _required(topic: str) -> tuple[str, ...]:
    options = CONTRACTS[topic].record._options
    return tuple(name for name in options.fields if name not in options.defaults)


_WRONG_TYPES: dict[str, tuple[tuple[str, Any], ...]] = {
    "clicks": (("topics", "fashion"), ("content_id", 42), ("customer_id", 12345)),
    "purchases": (("total", "49.99"), ("items", {"sku": 1}), ("occurred_at", 1767571200)),
    "consents": (("purposes", "email"), ("action", True), ("occurred_at", 1767571200)),
    "profiles": (("birth_year", "1984"), ("attributes", {"vip": True}), ("language", None)),
}
_BAD_VALUES: dict[str, dict[str, tuple[tuple[str, Any], ...]]] = {
    "bad-choice": {"clicks": (("channel", "fax"), ("channel", "newsletter")),
                   "consents": (("action", "maybe"), ("legal_basis", "because"))},
    "bad-format": {"profiles": (("time_zone", "Europe/Atlantis"), ("locale", "German"),
                                ("language", "DE")),
                   "purchases": (("currency", "euro"), ("currency", "€"))},
    "out-of-range": {"profiles": (("birth_year", 1850), ("birth_year", 2201)),
                     "purchases": (("total", -1.0), ("quantity", 0), ("unit_price", -9.99))},
    "non-finite-number": {"purchases": (("total", float("nan")), ("unit_price", float("inf")))},
}
_EXTRA_FIELDS = (("email", "someone@example.com"), ("customerId", "c-1"),
                 ("user_agent", "Mozilla/5.0"))
_PADDED = {"clicks": "url", "purchases": "order_id", "consents": "source", "profiles": "gender"}
_EVERY_TOPIC = ("garbage-bytes", "empty-value", "truncated-msgpack", "invalid-json", "not-a-map",
                "missing-field", "wrong-type", "unknown-version", "future-time", "oversize",
                "key-mismatch", "naive-datetime", "unknown-field")
MALFORMED_KINDS_BY_TOPIC: dict[str, tuple[str, ...]] = {
    topic: _EVERY_TOPIC + tuple(k for k, by in _BAD_VALUES.items() if topic in by)
    for topic in _MALFORMED_TOPICS
}
#: Every label :attr:`Message.malformed` can carry.
MALFORMED_KINDS: tuple[str, ...] = _EVERY_TOPIC + tuple(_BAD_VALUES)


def _break(kind: str, topic: str, payload: dict[str, Any], key: bytes,
           when: datetime, rng: Random) -> bytes | None:
    """Make a well-formed ``payload`` (and key) violate the contract as ``kind`` says."""
    if kind == "missing-field":
        del payload[rng.choice(_required(topic))]
    elif kind == "wrong-type":
        name, value = rng.choice(_WRONG_TYPES[topic])
        payload[name] = value
    elif kind == "unknown-version":
        payload["schema_version"] = rng.choice((2, 0, "1"))
    elif kind == "future-time":  # a century typo in a device clock
        payload["occurred_at"] = (when + timedelta(days=36525)).isoformat()
    elif kind == "naive-datetime":
        payload["occurred_at"] = when.replace(tzinfo=None).isoformat()
    elif kind == "oversize":  # e.g. a tracking URL carrying a whole page state
        payload[_PADDED[topic]] = "x" * rng.randint(66_000, 80_000)
    elif kind == "key-mismatch":
        return rng.choice((None, key.upper(), key + b" "))
    elif kind == "unknown-field":
        name, value = rng.choice(_EXTRA_FIELDS)
        payload[name] = value
    else:
        name, value = rng.choice(_BAD_VALUES[kind][topic])
        target = payload["items"][0] if name in ("quantity", "unit_price") else payload
        target[name] = value
    return key
