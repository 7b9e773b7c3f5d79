"""Interest tags from behaviour: decayed topic scores, windowed counts, tag rules.

Every click (and every purchase, see :mod:`agents.core.profile`) on content
about some topics adds to the customer's :class:`~agents.core.customer.TopicInterest`
in each of them.  A click on an item about *k* topics is weaker evidence for
each one, so it adds ``1/k`` to each topic's score; it still counts as one
click in each topic's windowed count.

A :class:`TagRule` assigns its tag when, at the same time,

* at least ``min_clicks`` clicks on its topic fall within ``window`` of the
  latest one (the windowed count),
* the topic's decayed score is at least ``floor``, and
* the topic holds at least ``min_share`` of the customer's whole decayed
  interest (so heavy browsers do not collect a tag for every topic they
  happen to touch).

An assigned tag is removed when the score has decayed below ``floor`` (the
behaviour stopped; :func:`expire_tags` finds these without a click) or when
the topic's share falls below ``keep_share`` (the behaviour moved on).  The
gaps between the thresholds for assigning and for keeping stop a tag from
flapping.  Shares do not change as time passes (every score decays at the
same rate), so only new clicks can remove a tag by share.  A decay removal
is dated when the score crossed the floor and caused by :data:`DECAY`,
whether the next click or a sweep finds it, so how often the sweep runs
changes nothing.  Conditions are judged at the customer's latest click time.

Scores are order-independent: clicks arriving late (a backfill) give the
same score as the same clicks in order, up to float rounding.

A customer keeps at most ``max_interests`` topics (default
:data:`MAX_INTERESTS`): one sender clicking thousands of made-up topics
must not grow one state without bound (20 clicks of 3,000 topics each made
60,001 interests and slowed every later event).  Beyond the cap the topics
with the weakest decayed score go first, never one the click is about nor
one carrying an assigned tag.  At the cap, which topic goes depends on the
order clicks arrive in; below it, nothing does.

>>> from datetime import UTC, datetime, timedelta
>>> from agents.core.customer import CustomerState
>>> rules = InterestRules(
...     (TagRule("fashion-trends", "fashion", 3, timedelta(days=14), 0.5),),
...     half_life=timedelta(days=7), max_recent=20)
>>> state, day = CustomerState("c-1"), datetime(2026, 3, 1, tzinfo=UTC)
>>> for i in range(3):
...     state, changes = apply_click(state, ["fashion"], day + timedelta(days=i), f"e{i}", rules)
>>> [(c.tag, c.change, c.caused_by) for c in changes]
[('fashion-trends', 'assigned', 'e2')]
>>> state, changes = expire_tags(state, day + timedelta(days=30), rules)
>>> [(c.tag, c.change, c.at.date().isoformat()) for c in changes]
[('fashion-trends', 'removed', '2026-03-20')]
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from agents.core.customer import AssignedTag, CustomerState, TopicInterest

#: Who removes a tag whose score decayed below its floor (no single event did).
DECAY = "decay"
#: Topics a customer's interests hold at most, unless the rules say otherwise.
MAX_INTERESTS = 200
#: Truth for measuring tag quality: a hidden interest weight from which a topic
#: counts as one of the customer's strong interests (see :func:`true_tags`).
STRONG_INTEREST = 0.2


@dataclass(frozen=True)
class TagRule:
    """When a tag is assigned to and removed from a customer (see the module doc)."""

    tag: str
    topic: str
    min_clicks: int
    window: timedelta
    floor: float
    min_share: float = 0.0
    keep_share: float = 0.0


@dataclass(frozen=True)
class InterestRules:
    """All tag rules plus how scores decay and how many click times are kept."""

    rules: tuple[TagRule, ...]
    half_life: timedelta
    #: Latest click times kept per topic; must be at least every ``min_clicks``.
    max_recent: int
    #: Topics kept per customer; the weakest beyond it are forgotten.
    max_interests: int = MAX_INTERESTS
    _by_topic: Mapping[str, tuple[TagRule, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict)
    _by_tag: Mapping[str, TagRule] = field(
        init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        by_topic: dict[str, tuple[TagRule, ...]] = {}
        for rule in self.rules:
            by_topic[rule.topic] = (*by_topic.get(rule.topic, ()), rule)
        # Frozen: the indexes are derived once here, never changed.
        object.__setattr__(self, "_by_topic", by_topic)
        object.__setattr__(self, "_by_tag", {rule.tag: rule for rule in self.rules})

    def for_topic(self, topic: str) -> tuple[TagRule, ...]:
        """The rules about ``topic`` (in configuration order)."""
        return self._by_topic.get(topic, ())

    def for_tag(self, tag: str) -> TagRule | None:
        """The rule that assigns ``tag``, if any."""
        return self._by_tag.get(tag)


@dataclass(frozen=True)
class TagChange:
    """A tag was assigned to or removed from a customer (becomes ``InterestTagChanged``).

    ``caused_by`` is the event that led to it, or :data:`DECAY` when the
    score faded below the floor; ``at`` is then the moment it did.
    """

    tag: str
    topic: str
    change: Literal["assigned", "removed"]
    score: float
    at: datetime
    caused_by: str


def click_topics(click_topics: list[str], content_topics: list[str] | None) -> list[str]:
    """The topics a click is about: its own, else the catalogue item's, else none.

    >>> click_topics([], ["fashion", "sports"])
    ['fashion', 'sports']
    >>> click_topics(["garden"], ["fashion"]), click_topics([], None)
    (['garden'], [])
    """
    if click_topics:
        return list(click_topics)
    return list(content_topics) if content_topics else []


def score_at(interest: TopicInterest, at: datetime, half_life: timedelta) -> float:
    """The topic's score decayed to ``at`` (no earlier than ``interest.scored_at``).

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> score_at(TopicInterest(2.0, t), t + timedelta(days=7), timedelta(days=7))
    1.0
    """
    if at <= interest.scored_at:
        return interest.score
    return interest.score * math.exp2((interest.scored_at - at) / half_life)


def add_click(interest: TopicInterest | None, at: datetime, weight: float,
              half_life: timedelta, max_recent: int) -> TopicInterest:
    """A new topic interest with one more click at ``at`` adding ``weight``.

    The input is left unchanged.  A click older than ``scored_at`` adds its
    weight decayed to ``scored_at``; a newer one decays the score to ``at``
    first, so the result does not depend on the order clicks arrive in.

    >>> from datetime import UTC, datetime, timedelta
    >>> t, week = datetime(2026, 1, 1, tzinfo=UTC), timedelta(days=7)
    >>> late_first = add_click(add_click(None, t + week, 1.0, week, 5), t, 1.0, week, 5)
    >>> in_order = add_click(add_click(None, t, 1.0, week, 5), t + week, 1.0, week, 5)
    >>> late_first.score == in_order.score == 1.5, in_order.scored_at == t + week
    (True, True)
    """
    if interest is None:
        return TopicInterest(weight, at, [at])
    recent = interest.recent.copy()
    insort(recent, at)
    if len(recent) > max_recent:
        del recent[: len(recent) - max_recent]
    if at <= interest.scored_at:
        score = interest.score + weight * math.exp2((at - interest.scored_at) / half_life)
        return TopicInterest(score, interest.scored_at, recent)
    return TopicInterest(score_at(interest, at, half_life) + weight, at, recent)


def windowed_count(recent: list[datetime], window: timedelta) -> int:
    """How many of the sorted click times lie within ``window`` of the latest (inclusive).

    >>> from datetime import UTC, datetime, timedelta
    >>> days = [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 15)]
    >>> windowed_count(days, timedelta(days=14)), windowed_count(days, timedelta(days=13))
    (3, 2)
    """
    if not recent:
        return 0
    return len(recent) - bisect_left(recent, recent[-1] - window)


def apply_click(state: CustomerState, topics: Iterable[str], at: datetime, event_id: str,
                rules: InterestRules) -> tuple[CustomerState, list[TagChange]]:
    """The state after a click at ``at`` on ``topics``, and the tags it assigned or removed.

    Deterministic in its inputs; ``state`` is left unchanged.  A click with
    no topics changes nothing.  Removals come first (in assignment order),
    then assignments (in rule order).
    """
    unique = list(dict.fromkeys(topics))
    if not unique:
        return state, []
    weight = 1.0 / len(unique)
    interests = dict(state.interests)
    for topic in unique:
        interests[topic] = add_click(interests.get(topic), at, weight, rules.half_life,
                                     rules.max_recent)
    latest = max(i.scored_at for i in state.interests.values()) if state.interests else at
    if len(interests) > rules.max_interests:
        _forget_weakest(interests, {*unique, *(t.topic for t in state.tags.values())},
                        max(at, latest), rules)
    new = _shallow_copy(state)
    new.interests = interests
    # A tag fades when its score falls below the floor, whether or not a sweep looked:
    # a click after that moment must not revive it, so judge decay without this click.
    # A late click (not after the latest) belonged to the past and counts.
    faded = _decay_removals(state if at > latest else new, max(at, latest), rules)
    return _evaluate(new, unique, at, event_id, rules, faded)


def _forget_weakest(interests: dict[str, TopicInterest], keep: set[str], at: datetime,
                    rules: InterestRules) -> None:
    """Drop the weakest topics not in ``keep`` until at most ``rules.max_interests`` remain."""
    excess = len(interests) - rules.max_interests
    weakest = sorted((score_at(interest, at, rules.half_life), topic)
                     for topic, interest in interests.items() if topic not in keep)
    for _, topic in weakest[:excess]:
        del interests[topic]


def expire_tags(state: CustomerState, now: datetime, rules: InterestRules
                ) -> tuple[CustomerState, list[TagChange]]:
    """Remove the tags whose score decayed below their floor by ``now`` (a watermark).

    Each removal is dated when the score crossed the floor, so the outcome
    does not depend on how often the sweep runs.  ``state`` is left unchanged.
    """
    changes = _decay_removals(state, now, rules)
    if not changes:
        return state, []
    removed = {c.tag for c in changes}
    new = _shallow_copy(state)
    new.tags = {tag: t for tag, t in state.tags.items() if tag not in removed}
    return new, changes


def _decay_removals(state: CustomerState, now: datetime, rules: InterestRules
                    ) -> list[TagChange]:
    changes = []
    for tag, assigned in state.tags.items():
        rule = rules.for_tag(tag)
        interest = state.interests.get(assigned.topic)
        if rule is None or interest is None:
            continue  # a tag without a rule is kept: its rule may return in a later deploy
        if score_at(interest, now, rules.half_life) < rule.floor:
            # The score reaches the floor at scored_at + half_life * log2(score / floor).
            crossing = interest.scored_at
            if interest.score > rule.floor:
                crossing += rules.half_life * math.log2(interest.score / rule.floor)
            at = max(assigned.assigned_at, min(now, crossing))
            changes.append(TagChange(tag, assigned.topic, "removed",
                                     score_at(interest, at, rules.half_life), at, DECAY))
    return changes


def _evaluate(new: CustomerState, touched: list[str], at: datetime, event_id: str,
              rules: InterestRules, faded: list[TagChange]
              ) -> tuple[CustomerState, list[TagChange]]:
    """Apply ``faded`` removals, share removals and assignments to ``new`` (a fresh copy)."""
    interests, half_life = new.interests, rules.half_life
    # Evaluate at the customer's latest click, so a late click never revives the past.
    latest = max(interest.scored_at for interest in interests.values())

    def score(topic: str) -> float:
        return score_at(interests[topic], latest, half_life)

    total: list[float] = []  # the sum of all decayed scores, once it is needed

    def share(topic: str) -> float:
        if not total:
            total.append(sum(score_at(i, latest, half_life) for i in interests.values()))
        return score(topic) / total[0] if total[0] > 0 else 0.0

    changes = faded
    removed = {c.tag for c in changes}
    for tag, assigned in new.tags.items():
        rule = rules.for_tag(tag)
        if (rule is not None and rule.keep_share > 0 and tag not in removed
                and share(assigned.topic) < rule.keep_share):
            changes.append(TagChange(tag, assigned.topic, "removed", score(assigned.topic),
                                     latest, event_id))
            removed.add(tag)
    assigned_now: dict[str, AssignedTag] = {}
    for topic in touched:
        for rule in rules.for_topic(topic):
            if (rule.tag in new.tags and rule.tag not in removed) or rule.tag in assigned_now:
                continue
            if (windowed_count(interests[topic].recent, rule.window) >= rule.min_clicks
                    and score(topic) >= rule.floor
                    and (rule.min_share <= 0 or share(topic) >= rule.min_share)):
                assigned_now[rule.tag] = AssignedTag(topic, at, event_id)
                changes.append(TagChange(rule.tag, topic, "assigned", score(topic), at,
                                         event_id))
    if changes:
        tags = {tag: t for tag, t in new.tags.items() if tag not in removed}
        tags.update(assigned_now)
        new.tags = tags
    return new, changes


def true_tags(interests: Mapping[str, float], rules: InterestRules,
              threshold: float = STRONG_INTEREST) -> set[str]:
    """The tags a customer should have: rules whose topic has hidden weight ≥ ``threshold``.

    This is the ground truth for :func:`tag_quality` on the synthetic
    audience, whose hidden interest weights sum to 1 per customer: with the
    default threshold a topic is a true interest when it drives at least a
    fifth of the customer's interest-led browsing.

    >>> rules = InterestRules((TagRule("fashion-trends", "fashion", 3, timedelta(days=14), 0.5),
    ...                        TagRule("book-lovers", "books", 3, timedelta(days=14), 0.5)),
    ...                       half_life=timedelta(days=7), max_recent=20)
    >>> sorted(true_tags({"fashion": 0.7, "books": 0.05, "tech": 0.25}, rules))
    ['fashion-trends']
    """
    return {rule.tag for rule in rules.rules if interests.get(rule.topic, 0.0) >= threshold}


def tag_quality(assigned: Mapping[str, set[str]], truth: Mapping[str, set[str]]
                ) -> tuple[float, float]:
    """Precision and recall of assigned tags over all (customer, tag) pairs.

    Customers missing from one side have no tags there.  With nothing
    assigned precision is 1.0 (nothing claimed wrongly); with nothing true,
    recall is 1.0.

    >>> tag_quality({"c1": {"a", "b"}, "c2": set()}, {"c1": {"a"}, "c2": {"c"}})
    (0.5, 0.5)
    """
    hits = claimed = true = 0
    for customer in assigned.keys() | truth.keys():
        mine, real = assigned.get(customer, set()), truth.get(customer, set())
        hits += len(mine & real)
        claimed += len(mine)
        true += len(real)
    return (hits / claimed if claimed else 1.0, hits / true if true else 1.0)


def _shallow_copy(state: CustomerState) -> CustomerState:
    """A new state sharing every part with ``state``; callers replace what they change.

    Several times faster than :func:`copy.copy`, and it keeps fields added later.
    """
    new = CustomerState.__new__(CustomerState)
    new.__dict__.update(state.__dict__)
    return new
