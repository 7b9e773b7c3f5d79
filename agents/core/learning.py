"""Next-best content: candidates, context features and a contextual bandit on River.

For one customer, channel and slot the engine

1. takes the **candidates** (:func:`agents.core.candidates.candidates`):
   items valid now, allowed on the channel and slot, each with its variant;
2. describes the **context** (:func:`context_for`): the customer's share of
   decayed interest per topic, the topics of their assigned tags,
   recency/frequency figures, language, device and local time of day;
3. lets the :class:`ContentPolicy` choose.  The policy scores every candidate
   with one shared River ``LogisticRegression`` over :func:`features` (the
   share of the customer's interest in the item's topics, a tag match, the
   item, its current popularity, whether the variant fell back, plus the
   context), so what is learnt about one customer or item carries over to
   the others (beyond :data:`SHORTLIST` candidates only the shortlist that
   can hold the best, :meth:`ContentPolicy.shortlist`, so a choice costs
   about the same however large the catalogue).  It is an epsilon-greedy
   contextual bandit:

   - ``holdout``: customers in the holdout group (:func:`in_holdout`, a keyed
     hash of the customer id, so membership is stable and needs no state) get
     a uniformly random candidate (of all, not of the shortlist); their
     reactions measure the uplift;
   - ``explore``: with probability ``explore`` (bounded by
     :data:`MAX_EXPLORE`) a uniformly random candidate (of all);
   - ``neutral``: without consent to personalisation, or before anything is
     known about the customer's interests, the non-personalised default: the
     candidate most clicked now (:class:`ClickCounts`, about items, not people);
   - ``exploit``: otherwise the candidate with the highest predicted click
     probability (ties broken by the generator).

The :class:`Choice` carries the features it was made on; the reward for it
(:mod:`agents.core.rewards`) is learnt on exactly those, however late it
comes; :func:`explain` puts a choice in words.  Randomness comes only from the
generator the caller passes in.  Several workers each learn on a replica and
publish snapshots combined by :func:`merged` (see README, "Model state").

>>> from datetime import UTC, datetime
>>> at = datetime(2026, 3, 2, 19, tzinfo=UTC)
>>> ctx = Context("c-1", "email", "newsletter-block", at, {"golf": 0.8, "books": 0.2})
>>> golf, books = Candidate("n-1", ("golf",), "de"), Candidate("n-2", ("books",), "de")
>>> policy = ContentPolicy(PolicyConfig(explore=0.0, holdout_share=0.0))
>>> for _ in range(200):
...     policy.learn(features(ctx, golf), True)
...     policy.learn(features(ctx, books), False)
>>> import random
>>> choice = policy.choose(ctx, [books, golf], random.Random(1))
>>> choice.content_id, choice.policy, choice.score > 0.5, choice.top_features[0][0]
('n-1', 'exploit', True, 'item:n-1')
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from river import linear_model, optim

from agents.core.candidates import Candidate, Fallback
from agents.core.customer import CustomerState
from agents.core.interests import score_at
from agents.core.snapshots import decode, encode

#: Highest share of decisions that may explore: above it the engine would be a random policy.
MAX_EXPLORE = 0.5
#: Options the model scores for one choice when there are more (see ContentPolicy.shortlist):
#: a decision costs about this many River predictions however large the catalogue is.
SHORTLIST = 50
#: Cheap scores this close to the last one shortlisted count as tied with it.  Far above the
#: rounding of a sum of a few weights, far below a difference the model means.
_NEAR = 1e-9
SNAPSHOT_KIND = "content-policy/1"
# River's constructors carry no type hints; its estimators are used as Any.
_LOGISTIC: Any = linear_model.LogisticRegression
_SGD: Any = optim.SGD
Policy = Literal["exploit", "explore", "holdout", "neutral"]


class RandomSource(Protocol):
    """A seeded generator (``random.Random`` or ``numpy.random.Generator``)."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


@dataclass(frozen=True)
class Context:
    """What the policy knows about one decision opportunity.

    ``shares`` is the customer's decayed interest per topic divided by the
    total (so the values sum to 1, or the mapping is empty); ``extra`` holds
    further customer features (recency, frequency, language, hour, device).
    """

    customer_id: str
    channel: str
    slot: str
    at: datetime
    shares: Mapping[str, float] = field(default_factory=dict)
    tag_topics: frozenset[str] = frozenset()
    extra: Mapping[str, float] = field(default_factory=dict)
    #: Consent to personalisation: without it only non-personal features count.
    personalise: bool = True


@dataclass(frozen=True)
class Choice:
    """The policy's answer: what to show, why, and what to learn the reward on."""

    content_id: str
    language: str
    fallback: Fallback | None
    policy: Policy
    #: Predicted click probability of the chosen item.
    score: float
    #: The features that weighed most: (name, weight x value), largest magnitude first.
    top_features: tuple[tuple[str, float], ...]
    model_version: str
    #: The features the choice was made on; learn the reward on exactly these.
    features: Mapping[str, float]
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyConfig:
    """How the content policy explores, holds out and learns."""

    #: Share of (non-holdout) decisions that explore a random candidate.
    explore: float = 0.05
    #: Share of customers that get a random choice, for measuring uplift.
    holdout_share: float = 0.05
    #: Salt of the holdout hash: a new salt draws a new holdout group.
    holdout_salt: str = "relevanz-holdout-1"
    learning_rate: float = 0.05
    #: Click-through rate assumed before anything is learnt.
    prior_ctr: float = 0.05
    l2: float = 0.0
    #: How fast item popularity (decayed click counts) forgets.
    popularity_half_life: timedelta = timedelta(days=3)
    #: Features named in a decision's reasons.
    explain: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.explore <= MAX_EXPLORE:
            raise ValueError(f"explore: got {self.explore}, expected 0 to {MAX_EXPLORE}")
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"holdout_share: got {self.holdout_share}, expected 0 to below 1")
        if not 0.0 < self.prior_ctr < 1.0:
            raise ValueError(f"prior_ctr: got {self.prior_ctr}, expected above 0 and below 1")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate: got {self.learning_rate}, expected above 0")


class ClickCounts:
    """Decayed click counts per content item: what is popular now, for everyone.

    Counts halve every ``half_life`` of event time and do not depend on the
    order clicks arrive in.  The counts are about items, not customers, so
    they may inform the non-personalised choice too.

    >>> from datetime import UTC, datetime
    >>> t, counts = datetime(2026, 3, 1, tzinfo=UTC), ClickCounts(timedelta(days=1))
    >>> for item in ("n-1", "n-1", "n-2"):
    ...     counts.learn_one(item, t)
    >>> [c.popularity for c in counts.rank([Candidate("n-1", (), "de"),
    ...                                     Candidate("n-2", (), "de")], t)]
    [1.0, 0.5]
    """

    def __init__(self, half_life: timedelta) -> None:
        self.half_life = half_life
        self._counts: dict[str, tuple[float, datetime]] = {}

    def learn_one(self, content_id: str, at: datetime) -> None:
        """Count one click on ``content_id`` at ``at``."""
        known = self._counts.get(content_id)
        if known is None:
            self._counts[content_id] = (1.0, at)
        elif at <= known[1]:
            self._counts[content_id] = (known[0] + math.exp2((at - known[1]) / self.half_life),
                                        known[1])
        else:
            self._counts[content_id] = (known[0] * math.exp2((known[1] - at) / self.half_life)
                                        + 1.0, at)

    def known(self) -> list[str]:
        """Every item clicked at least once."""
        return list(self._counts)

    def set(self, content_id: str, count: float, at: datetime) -> None:
        """Make the decayed count of ``content_id`` at ``at`` equal ``count``."""
        self._counts[content_id] = (count, at)

    def count(self, content_id: str, at: datetime) -> float:
        """The decayed click count of ``content_id`` at ``at``."""
        known = self._counts.get(content_id)
        if known is None:
            return 0.0
        return known[0] * math.exp2(min((known[1] - at) / self.half_life, 0.0))

    def counts(self, options: Sequence[Candidate], at: datetime) -> list[float]:
        """:meth:`count` of every option, in one pass (the same figures, at less cost)."""
        known, half_life, exp2 = self._counts.get, self.half_life, math.exp2
        found = []
        for c in options:
            entry = known(c.content_id)
            if entry is None:
                found.append(0.0)
            else:
                n, since = entry
                found.append(n if since >= at else n * exp2((since - at) / half_life))
        return found

    def rank(self, options: Sequence[Candidate], at: datetime) -> list[Candidate]:
        """``options`` with ``popularity`` set: each count over the largest among them."""
        counts = self.counts(options, at)
        top = max(counts, default=0.0)
        return [_popular(c, n, top) for c, n in zip(options, counts, strict=True)]


def context_for(state: CustomerState, channel: str, slot: str, at: datetime,
                half_life: timedelta, device: str | None = None, personalise: bool = True
                ) -> Context:
    """The decision context for ``state`` at ``at`` (interest decayed with ``half_life``).

    >>> from datetime import UTC, datetime
    >>> from agents.core.customer import TopicInterest
    >>> at = datetime(2026, 3, 8, tzinfo=UTC)
    >>> state = CustomerState("c-1", interests={
    ...     "golf": TopicInterest(3.0, at), "books": TopicInterest(1.0, at)}, last_event_at=at)
    >>> ctx = context_for(state, "web", "web-banner", at, timedelta(days=7))
    >>> dict(ctx.shares), ctx.extra["recency"]
    ({'golf': 0.75, 'books': 0.25}, 1.0)
    """
    scores = {t: score_at(i, at, half_life) for t, i in state.interests.items()}
    total = sum(scores.values())
    shares = {t: s / total for t, s in scores.items()} if total > 0 else {}
    extra: dict[str, float] = {"bias": 1.0}
    if state.last_event_at is not None:
        days = max((at - state.last_event_at) / timedelta(days=1), 0.0)
        extra["recency"] = 1.0 / (1.0 + days)
    extra["activity"] = math.log1p(total) / 5.0
    extra["orders"] = math.log1p(state.purchases.orders) / 5.0
    master = state.master
    if master is not None:
        extra[f"language:{master.language}"] = 1.0
    extra[f"daypart:{_daypart(at, master.time_zone if master else None)}"] = 1.0
    if device:
        extra[f"device:{device}"] = 1.0
    return Context(state.customer_id, channel, slot, at, shares,
                   frozenset(tag.topic for tag in state.tags.values()), extra, personalise)


def features(context: Context, candidate: Candidate) -> dict[str, float]:
    """The model's input for showing ``candidate`` in ``context`` (finite, inputs unchanged).

    ``affinity`` is the share of the customer's interest in the item's
    topics, ``tag_match`` whether an assigned tag covers one of them.

    >>> from datetime import UTC, datetime
    >>> ctx = Context("c-1", "web", "web-banner", datetime(2026, 3, 1, tzinfo=UTC),
    ...               {"golf": 0.6, "books": 0.4}, frozenset({"golf"}))
    >>> x = features(ctx, Candidate("n-1", ("golf", "travel"), "de"))
    >>> x["affinity"], x["tag_match"], x["item:n-1"]
    (0.6, 1.0, 1.0)
    """
    x = item_features(context, candidate)
    x["channel:" + context.channel] = 1.0
    x["slot:" + context.slot] = 1.0
    if context.personalise:
        x.update(context.extra)
    return x


def item_features(context: Context, candidate: Candidate) -> dict[str, float]:
    """The part of :func:`features` that differs between candidates in one context.

    Ranking candidates by the model's score on these alone gives the same
    order as on the full features (a linear model adds the same context
    terms to every candidate), at a fraction of the cost.
    """
    x = {"item:" + candidate.content_id: 1.0}
    if candidate.fallback is not None:
        x["fallback"] = 1.0
    if candidate.popularity:
        x["popularity"] = candidate.popularity
    if context.personalise:
        x["affinity"] = min(1.0, sum(context.shares.get(t, 0.0) for t in candidate.topics))
        if context.tag_topics.intersection(candidate.topics):
            x["tag_match"] = 1.0
    return x


def in_holdout(customer_id: str, share: float, salt: str) -> bool:
    """True when the customer belongs to the holdout group of size ``share``.

    A keyed hash of the id, so every worker agrees without shared state and
    the group changes only with ``salt``.

    >>> in_holdout("c-1", 0.0, "s"), in_holdout("c-1", 1.0, "s")
    (False, True)
    """
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


class ContentPolicy:
    """An epsilon-greedy contextual bandit over one shared River logistic regression.

    Follows River's contract: :meth:`learn_one` and :meth:`predict_proba_one`
    (inputs are not changed); the model is deterministic, all randomness of
    :meth:`choose` comes from the generator passed in.  ``version`` is the
    snapshot version the model descends from, ``updates`` the rewards learnt
    since the policy was created.
    """

    def __init__(self, config: PolicyConfig | None = None, model_id: str = "content-policy"
                 ) -> None:
        self.config = config or PolicyConfig()
        self.model_id = model_id
        self.model = self._regression()
        #: What everyone clicks now: the non-personalised default and a feature.
        self.popularity = ClickCounts(self.config.popularity_half_life)
        self.version = 0
        self.updates = 0

    def _regression(self) -> Any:
        rate = self.config.learning_rate
        # Starting at the prior CTR keeps the first, mostly negative labels from pushing
        # every weight down together before the intercept has caught up.
        prior = self.config.prior_ctr
        return _LOGISTIC(optimizer=_SGD(rate), l2=self.config.l2, intercept_lr=rate,
                         intercept_init=math.log(prior / (1.0 - prior)))

    @property
    def model_version(self) -> str:
        """``model_id@version+updates``: the snapshot it descends from, rewards learnt in all."""
        return f"{self.model_id}@{self.version}+{self.updates}"

    def to_snapshot(self, version: int, created_at: datetime) -> tuple[bytes, str]:
        """Snapshot bytes and checksum of this policy as ``version`` (which it then is).

        Take ``version`` one above the latest stored one, so versions only grow.
        """
        self.version = version
        return encode(self.model_id, version, SNAPSHOT_KIND, self, created_at)

    @classmethod
    def from_snapshot(cls, blob: bytes, checksum: str) -> ContentPolicy:
        """The policy saved by :meth:`to_snapshot` (raises ``SnapshotInvalid``)."""
        policy = decode(blob, checksum, SNAPSHOT_KIND).model
        if not isinstance(policy, cls):
            raise TypeError(f"snapshot holds {type(policy).__name__}, not {cls.__name__}")
        return policy

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[bool, float]:
        """Click probability for features ``x`` (River's contract)."""
        proba: dict[bool, float] = self.model.predict_proba_one(x)
        return proba

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        """Learn that showing with features ``x`` got a click (``y``) or not (both models)."""
        self.model.learn_one(dict(x), bool(y))
        self.updates += 1

    def learn(self, x: Mapping[str, float], clicked: bool) -> None:
        """Learn the reward of a decision made on features ``x`` (its ``Choice.features``)."""
        self.learn_one(x, clicked)

    def observe_click(self, content_id: str, at: datetime) -> None:
        """Count any click on a catalogue item (decided or not) towards its popularity."""
        self.popularity.learn_one(content_id, at)

    def choose(self, context: Context, options: Sequence[Candidate], rng: RandomSource
               ) -> Choice | None:
        """The candidate to show in ``context`` (None when there is none).

        Holdout and exploration pick among all ``options``; the best is
        searched among the :meth:`shortlist` (the same answer, at the cost of
        at most about :data:`SHORTLIST` model scores).
        """
        if not options:
            return None
        counts = self.popularity.counts(options, context.at)
        top = max(counts)
        config = self.config
        if in_holdout(context.customer_id, config.holdout_share, config.holdout_salt):
            at = _index(len(options), rng)
            return self._choice(context, _popular(options[at], counts[at], top), "holdout")
        if config.explore > 0.0 and rng.random() < config.explore:
            at = _index(len(options), rng)
            return self._choice(context, _popular(options[at], counts[at], top), "explore")
        # No consent to personalise, or nothing known yet: the best item for anyone.
        neutral = not (context.personalise and context.shares)
        keep = self.shortlist(context, options, counts, neutral)
        ranked = [_popular(options[i], counts[i], top) for i in keep]
        return self._best(context, ranked, rng, "neutral" if neutral else "exploit")

    def shortlist(self, context: Context, options: Sequence[Candidate], counts: Sequence[float],
                  neutral: bool, size: int = 0) -> list[int]:
        """Positions (ascending) of the options that can be the best; all when few.

        Beyond ``size`` options (default :data:`SHORTLIST`) each gets a cheap
        score: its popularity count for the neutral choice, else the model's
        linear score of :func:`item_features` (item weight, fallback,
        popularity, topic-interest match and tag match) summed in plain
        Python from the model's weights, without River's per-call cost: the
        context's features add the same to every option, so this orders the
        options as the model does.  The ``size`` best are kept (the earlier
        of equal ones); when all of them tie with the best, every option
        tying with it is kept too.  So every option the model would score as
        tied with the best is there, and :meth:`_best` picks what it would
        have picked among all options, drawing the same random numbers.
        Only an untrained model with many equal options scores more.
        """
        size = size or SHORTLIST
        n = len(options)
        if n <= size:
            return list(range(n))
        if neutral:
            scores = list(counts)
        else:
            top = max(counts)
            scale = 1.0 / top if top > 0.0 else 0.0
            weight = self.model._weights.get
            w_fallback, w_tag = weight("fallback", 0.0), weight("tag_match", 0.0)
            w_popularity, w_affinity = weight("popularity", 0.0) * scale, weight("affinity", 0.0)
            shares, tags = context.shares.get, context.tag_topics
            scores = []
            for c, count in zip(options, counts, strict=True):
                affinity = 0.0
                for t in c.topics:
                    affinity += shares(t, 0.0)
                score = (weight("item:" + c.content_id, 0.0) + w_popularity * count
                         + w_affinity * min(1.0, affinity))
                if c.fallback is not None:
                    score += w_fallback
                if not tags.isdisjoint(c.topics):
                    score += w_tag
                scores.append(score)
        kept = heapq.nlargest(size, range(n), key=scores.__getitem__)
        last = scores[kept[-1]]
        if max(scores) - last <= _NEAR:
            # As many as are kept tie with the best: all of them are candidates for it.
            return [i for i, score in enumerate(scores) if score >= last - _NEAR]
        return sorted(kept)

    def _best(self, context: Context, options: Sequence[Candidate], rng: RandomSource,
              policy: Policy) -> Choice:
        model = self.model
        predict = model.predict_proba_one
        neutral = policy == "neutral"
        best: list[Candidate] = []
        top = -math.inf
        for candidate in options:
            # The non-personalised default is what is popular now; the model only scores it.
            p = (candidate.popularity if neutral
                 else predict(item_features(context, candidate))[True])
            if p > top + 1e-12:
                top, best = p, [candidate]
            elif p >= top - 1e-12:
                best.append(candidate)
        chosen = best[int(rng.random() * len(best))] if len(best) > 1 else best[0]
        x = features(context, chosen)
        return self._explained(chosen, x, predict(x)[True], policy, model.weights)

    def _choice(self, context: Context, candidate: Candidate, policy: Policy) -> Choice:
        x = features(context, candidate)
        return self._explained(candidate, x, self.model.predict_proba_one(x)[True], policy,
                               self.model.weights)

    def _explained(self, candidate: Candidate, x: dict[str, float], score: float,
                   policy: Policy, weights: Mapping[str, float]) -> Choice:
        weighed = sorted(((name, weights.get(name, 0.0) * value) for name, value in x.items()),
                         key=lambda nw: (-abs(nw[1]), nw[0]))
        top = tuple((name, round(w, 4)) for name, w in weighed[: self.config.explain] if w)
        return Choice(candidate.content_id, candidate.language, candidate.fallback, policy,
                      score, top, self.model_version, x, candidate.topics)


_WHY = {"exploit": "highest predicted click probability",
        "explore": "exploring: a random candidate",
        "holdout": "holdout group: a random candidate",
        "neutral": "non-personalised default: the most clicked candidate now"}


def explain(choice: Choice) -> list[str]:
    """The choice in words, for a decision's ``reasons`` (the caller adds the consent basis).

    >>> choice = Choice("n-1", "en", "catalogue", "exploit", 0.1234,
    ...                 (("affinity", 1.52), ("item:n-1", -0.2)), "content-policy@3+120", {})
    >>> for line in explain(choice):
    ...     print(line)
    exploit: highest predicted click probability (0.123)
    weighed most: affinity +1.52, item:n-1 -0.20
    variant en: fell back to the catalogue default
    model content-policy@3+120
    """
    lines = [f"{choice.policy}: {_WHY[choice.policy]} ({choice.score:.3f})"]
    if choice.top_features:
        lines.append("weighed most: " + ", ".join(f"{name} {weight:+.2f}"
                                                   for name, weight in choice.top_features))
    if choice.fallback is not None:
        step = {"campaign": "the campaign default", "catalogue": "the catalogue default",
                "any": "the only variants there are"}[choice.fallback]
        lines.append(f"variant {choice.language}: fell back to {step}")
    lines.append(f"model {choice.model_version}")
    return lines


def merged(latest: ContentPolicy, base: ContentPolicy, mine: ContentPolicy, at: datetime
           ) -> ContentPolicy:
    """``latest`` plus what ``mine`` learnt since ``base``: how worker replicas are combined.

    Every worker learns from the rewards of the customers it owns, starting
    from a stored snapshot (``base``).  To publish, it reads the newest
    snapshot (``latest``, which other workers may have moved on), adds its
    own change (weights, intercept, popularity counts at ``at``, update
    count) and stores the result one version up.  The changes of linear
    models add up, so no worker's learning is lost; nothing given is changed.

    >>> from datetime import UTC, datetime
    >>> at = datetime(2026, 3, 1, tzinfo=UTC)
    >>> base = ContentPolicy()
    >>> a, b = ContentPolicy.from_snapshot(*base.to_snapshot(1, at)), ContentPolicy()
    >>> a.learn_one({"affinity": 1.0}, True)
    >>> both = merged(b, base, a, at)
    >>> both.model.weights["affinity"] == a.model.weights["affinity"], both.updates
    (True, 1)
    """
    result = copy.deepcopy(latest)
    # River's ``weights`` is a copy; ``_weights`` is the model's own vector.
    own, current = result.model._weights, result.model.weights
    theirs, before = mine.model.weights, base.model.weights
    for name in set(theirs) | set(before):
        own[name] = current.get(name, 0.0) + theirs.get(name, 0.0) - before.get(name, 0.0)
    result.model.intercept += mine.model.intercept - base.model.intercept
    counts = result.popularity
    for content_id in set(mine.popularity.known()) | set(base.popularity.known()):
        delta = mine.popularity.count(content_id, at) - base.popularity.count(content_id, at)
        counts.set(content_id, max(counts.count(content_id, at) + delta, 0.0), at)
    result.updates = latest.updates + mine.updates - base.updates
    return result


def _index(n: int, rng: RandomSource) -> int:
    """A uniformly random position among ``n``."""
    return min(int(rng.random() * n), n - 1)


def _popular(c: Candidate, count: float, top: float) -> Candidate:
    """``c`` with ``popularity`` ``count / top`` (unchanged when nothing was clicked)."""
    if top <= 0.0:
        return c
    # Built directly: dataclasses.replace costs three times as much on this hot path.
    return Candidate(c.content_id, c.topics, c.language, c.fallback, c.campaign_id, count / top)


def _daypart(at: datetime, time_zone: str | None) -> str:
    """night, morning, afternoon or evening at ``at`` in the customer's zone (UTC if unknown)."""
    local = at
    if time_zone:
        try:
            local = at.astimezone(ZoneInfo(time_zone))
        except (ZoneInfoNotFoundError, ValueError):
            local = at
    return ("night", "morning", "afternoon", "evening")[local.hour // 6]
