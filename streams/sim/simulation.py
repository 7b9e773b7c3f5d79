"""Decision quality on the synthetic audience: a click model and a CTR evaluation.

**The click model.**  :mod:`streams.sim.traffic` draws the topic of each of a
customer's clicks from their hidden interests: with probability ``noise``
(0.1, traffic's own share of off-interest browsing) a uniformly random
topic, otherwise a topic with probability equal to its hidden weight.  The
chance that a customer's intent at a given moment falls on one of an item's
topics is therefore

    intent(c, i) = (1 - noise) * sum of w(c, t) over the item's topics t
                   + noise * (number of item topics) / (number of topics)

and an item shown to the customer is clicked with probability

    P(click | c, i) = base_rate + interest_rate * intent(c, i)

with ``base_rate = 0.01`` (clicks regardless of interest: curiosity,
mis-taps) and ``interest_rate = 0.20`` (an item exactly on the intent is
clicked one time in five).  Nothing else matters: not the channel, hour,
language variant or the item itself.  The parameters were fixed before any
policy was measured and are not tuned toward the engine.

**The evaluation.**  :func:`evaluate_policies` replays ``events`` messages of
the traffic stream.  Every valid click is a *decision opportunity*: just
before it, the customer is on that click's channel (``web`` if untracked),
a slot of that channel is filled (``email`` → newsletter-block, ``app`` and
``push`` → app-card, ``web`` → landing-page or web-banner at random), and
three policies each choose one item among the same candidates
(:func:`agents.core.learning.candidates`):

- ``engine``: :class:`agents.core.learning.ContentPolicy` with its defaults
  (5 % exploration, a 5 % holdout group that gets random items, the neutral
  choice for customers without consent to personalisation), on context from
  the customer state the real core builds from the stream
  (:func:`agents.core.profile.apply_event`, consent respected);
- ``random``: a uniformly random candidate;
- ``popular``: the candidate with the most clicks so far (every catalogue
  click in the stream, plus the clicks its own choices earned).

One uniform draw per opportunity decides all three reactions (common random
numbers), so the policies differ only in what they chose.  The engine learns
through :mod:`agents.core.rewards`: a simulated click carries its decision
id and is learnt at once; a decision without a click becomes a non-click
when its attribution window (30 minutes of event time) ends.  Simulated
reactions train the policies only; they are not fed back into the stream, so
all three face the same audience.  CTRs count opportunities after the first
``warmup`` events.

>>> result = evaluate_policies(seed=1, events=3_000, warmup=1_000, customers=100)
>>> sorted(result)[:3], result["ctr_opportunities"] > 500
(['ctr_engine', 'ctr_opportunities', 'ctr_popular'], True)
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random
from typing import Any

from agents.core.candidates import Candidate, candidates
from agents.core.consent import ConsentPolicy
from agents.core.customer import CustomerState
from agents.core.learning import (
    Choice,
    ContentPolicy,
    PolicyConfig,
    context_for,
)
from agents.core.profile import CustomerRules, ProfileRules, apply_event
from agents.core.rewards import OpenDecision, Reaction, Reward, attribute, expire, open_decision
from schemas.records import Clicked, ContentPublished, Purchased, Record
from schemas.validation import parse_message
from streams.sim.traffic import (
    _NOISE,
    TOPICS,
    ContentTruth,
    CustomerTruth,
    TrafficConfig,
    TrafficGenerator,
)
from streams.tag_rules import load_rules

#: Slots each channel can fill (the traffic generator's slot names).
SLOTS_BY_CHANNEL = {"email": ("newsletter-block",), "app": ("app-card",),
                    "push": ("app-card",), "web": ("landing-page", "web-banner"),
                    "sms": ("newsletter-block",)}
ATTRIBUTION_WINDOW = timedelta(minutes=30)


@dataclass(frozen=True)
class ClickModel:
    """P(click | customer, item) from hidden interests (see the module doc)."""

    base_rate: float = 0.01
    interest_rate: float = 0.20
    noise: float = _NOISE
    topics: int = len(TOPICS)

    def intent(self, customer: CustomerTruth, item: ContentTruth) -> float:
        """Chance that the customer's intent falls on one of the item's topics."""
        weight = sum(customer.interests.get(t, 0.0) for t in item.topics)
        return (1.0 - self.noise) * weight + self.noise * len(item.topics) / self.topics

    def probability(self, customer: CustomerTruth, item: ContentTruth) -> float:
        """The click probability of showing ``item`` to ``customer``.

        >>> from streams.sim.traffic import LOCALES
        >>> from datetime import UTC, datetime
        >>> c = CustomerTruth("c", {"golf": 1.0}, LOCALES[0], 19, 0.1, 1, None, None)
        >>> t = datetime(2026, 1, 1, tzinfo=UTC)
        >>> golf = ContentTruth("n", ("golf",), ("de",), ("web",), ("web-banner",), None, t, t)
        >>> round(ClickModel(topics=10).probability(c, golf), 4)
        0.192
        """
        return self.base_rate + self.interest_rate * self.intent(customer, item)


@dataclass
class _Tally:
    shown: int = 0
    clicks: int = 0

    def add(self, clicked: bool) -> None:
        self.shown += 1
        self.clicks += clicked

    @property
    def ctr(self) -> float:
        return self.clicks / self.shown if self.shown else 0.0


def evaluate_policies(seed: int, events: int = 30_000, warmup: int = 5_000,
                      customers: int = 1000, catalogue_size: int = 50,
                      config: PolicyConfig | None = None, click_model: ClickModel | None = None,
                      restart_at: int | None = None, restore: bool = True,
                      after_restart: int = 0, details: bool = False) -> dict[str, Any]:
    """CTR of the engine, a random and a most-popular policy on one simulated audience.

    With ``restart_at`` the engine's policy is replaced after that many
    events: by a policy restored from a snapshot (``restore``) or by a new,
    untrained one; ``ctr_after_restart`` is then the engine's CTR over the
    ``after_restart`` opportunities that follow (all of them when 0).
    """
    traffic = TrafficGenerator(TrafficConfig(seed=seed, customers=customers,
                                             catalogue_size=catalogue_size))
    run = _PolicyRun(seed, traffic, click_model or ClickModel(), config,
                     now=traffic.config.start + traffic.span(events) + timedelta(days=1))
    for i, message in enumerate(traffic.messages(events)):
        if restart_at is not None and i == restart_at:
            run.restart(restore)
        if message.malformed or message.duplicate:
            continue
        record = parse_message(message.topic, message.key, message.value, now=run.now)
        if isinstance(record, ContentPublished):
            run.catalogue[record.content_id] = record
            run.offered = _Offered(run.catalogue)
            continue
        run.expire(record.occurred_at)
        state = run.states.get(record.customer_id) or CustomerState(record.customer_id)
        if isinstance(record, Clicked):
            counted = i >= warmup
            restarted = restart_at is not None and i >= restart_at and (
                not after_restart or run.tallies["restart"].shown < after_restart)
            run.click(record, state, counted, restarted)
        run.apply(record, state)
    return run.result(warmup, details, restart_at is not None)


class _PolicyRun:
    """The state of one :func:`evaluate_policies` run: the engine's policy and its rivals."""

    def __init__(self, seed: int, traffic: TrafficGenerator, model: ClickModel,
                 config: PolicyConfig | None, now: datetime) -> None:
        self.truth, self.model, self.config, self.now = traffic.truth, model, config, now
        self.rules = CustomerRules(load_rules(None), ProfileRules(200, timedelta(days=365)))
        self.consent = ConsentPolicy()
        self.policy = ContentPolicy(config)
        self.rng_slot, self.rng_click = Random(f"{seed}:slot"), Random(f"{seed}:click")
        self.rng_engine, self.rng_random = Random(f"{seed}:engine"), Random(f"{seed}:random")
        self.catalogue: dict[str, ContentPublished] = {}
        self.offered = _Offered(self.catalogue)
        self.states: dict[str, CustomerState] = {}
        self.open_by_customer: dict[str, tuple[OpenDecision, ...]] = {}
        # Windows are equal, so FIFO is deadline order.
        self.deadlines: deque[tuple[datetime, str]] = deque()
        self.popularity: Counter[str] = Counter()
        self.tallies = {name: _Tally()
                        for name in ("engine", "random", "popular", "restart", "oracle")}
        self.by_policy: dict[str, _Tally] = {}
        self.opportunities = self.decisions = 0

    def restart(self, restore: bool) -> None:
        """Replace the policy: by one restored from its snapshot, or by a new one."""
        if restore:
            blob, checksum = self.policy.to_snapshot(self.policy.version + 1, self.now)
            self.policy = ContentPolicy.from_snapshot(blob, checksum)
        else:
            self.policy = ContentPolicy(self.config)

    def learn(self, rewards: list[Reward]) -> None:
        for reward in rewards:
            self.policy.learn(reward.decision.features, reward.clicked)

    def expire(self, at: datetime) -> None:
        """Label the open decisions whose attribution window closed by ``at``."""
        while self.deadlines and self.deadlines[0][0] <= at:
            cid = self.deadlines.popleft()[1]
            self.open_by_customer[cid], labels = expire(self.open_by_customer.get(cid, ()), at)
            self.learn(labels)

    def click(self, record: Clicked, state: CustomerState, counted: bool,
              restarted: bool) -> None:
        """A page view: each policy picks an item for a slot; the click model answers."""
        at, cid = record.occurred_at, record.customer_id
        channel = record.channel or "web"
        slots = SLOTS_BY_CHANNEL[channel]
        slot = slots[int(self.rng_slot.random() * len(slots))]
        language = state.master.language if state.master else None
        options = self.offered.get(channel, slot, language, at)
        if options:
            person, u = self.truth.customers[cid], self.rng_click.random()

            def clicks(item: Candidate | str) -> bool:
                content_id = item if isinstance(item, str) else item.content_id
                return u < self.model.probability(person, self.truth.content[content_id])

            context = context_for(state, channel, slot, at, self.rules.interests.half_life,
                                  record.device, self.consent.may_personalise(state))
            choice = self.policy.choose(context, options, self.rng_engine)
            assert choice is not None
            clicked = clicks(choice.content_id)
            self.decisions += 1
            self.learn(_decided(self.open_by_customer, self.deadlines, cid, choice,
                                f"{cid}:sim:{self.decisions}", at, clicked))
            popular = max(options, key=lambda c: self.popularity[c.content_id])
            popular_hit = clicks(popular)
            self.popularity[popular.content_id] += popular_hit
            random_hit = clicks(_pick(options, self.rng_random))
            if counted:
                self.opportunities += 1
                self.tallies["engine"].add(clicked)
                self.tallies["random"].add(random_hit)
                self.tallies["popular"].add(popular_hit)
                self.tallies["oracle"].add(any(clicks(c) for c in options))
                self.by_policy.setdefault(choice.policy, _Tally()).add(clicked)
            if restarted:
                self.tallies["restart"].add(clicked)
        if record.content_id in self.catalogue:  # the click itself, after the decision before it
            self.popularity[record.content_id] += 1
            self.policy.observe_click(record.content_id, at)

    def apply(self, record: Record, state: CustomerState) -> None:
        """The customer's state after ``record`` (reactions only with consent to profile)."""
        if isinstance(record, Clicked | Purchased) and not self.consent.may_profile(state):
            return
        topics = (self.catalogue[record.content_id].topics
                  if isinstance(record, Clicked) and record.content_id in self.catalogue
                  else None)
        self.states[record.customer_id], _ = apply_event(state, record, self.rules, topics)

    def result(self, warmup: int, details: bool, restarted: bool) -> dict[str, Any]:
        tallies = self.tallies
        result: dict[str, Any] = {
            "ctr_engine": round(tallies["engine"].ctr, 4),
            "ctr_random": round(tallies["random"].ctr, 4),
            "ctr_popular": round(tallies["popular"].ctr, 4),
            "ctr_warmup": warmup,
            "ctr_opportunities": self.opportunities,
        }
        if details:
            result["ctr_oracle"] = round(tallies["oracle"].ctr, 4)
            result["engine_by_policy"] = {name: (t.shown, round(t.ctr, 4))
                                          for name, t in sorted(self.by_policy.items())}
        if restarted:
            result["ctr_after_restart"] = round(tallies["restart"].ctr, 4)
            result["restart_opportunities"] = tallies["restart"].shown
        return result


def summarise(seeds: Iterable[int], **options: Any) -> dict[str, Any]:
    """Mean, spread and range of :func:`evaluate_policies` over ``seeds`` (same ``options``).

    Besides the three CTRs it summarises the ratios the acceptance criteria
    name: ``engine_vs_random`` and ``engine_vs_popular``.
    """
    runs = [evaluate_policies(seed, **options) for seed in seeds]
    series = {key: [run[key] for run in runs]
              for key in ("ctr_engine", "ctr_random", "ctr_popular")}
    series["engine_vs_random"] = [r["ctr_engine"] / r["ctr_random"] for r in runs]
    series["engine_vs_popular"] = [r["ctr_engine"] / r["ctr_popular"] for r in runs]
    summary: dict[str, Any] = {"runs": len(runs),
                               "ctr_opportunities": [r["ctr_opportunities"] for r in runs]}
    for key, values in series.items():
        summary[key] = {"mean": round(statistics.mean(values), 4),
                        "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                        "min": round(min(values), 4), "max": round(max(values), 4)}
    return summary


class _Offered:
    """:func:`candidates` per channel, slot and language, kept until an item's validity changes."""

    def __init__(self, catalogue: dict[str, ContentPublished]) -> None:
        self.catalogue = catalogue
        self.lists: dict[tuple[str, str, str | None], list[Candidate]] = {}
        self.until: datetime | None = None
        self.since: datetime | None = None

    def get(self, channel: str, slot: str, language: str | None, at: datetime
            ) -> list[Candidate]:
        if self.since is None or at < self.since or (self.until is not None and at >= self.until):
            self.lists.clear()
            self.since = at
            bounds = [t for item in self.catalogue.values()
                      for t in (item.valid_from, item.valid_until) if t is not None and t > at]
            self.until = min(bounds, default=None)
        key = (channel, slot, language)
        found = self.lists.get(key)
        if found is None:
            found = self.lists[key] = candidates(self.catalogue.values(), channel, slot, at,
                                                 language)
        return found


def _decided(open_by_customer: dict[str, tuple[OpenDecision, ...]],
             deadlines: deque[tuple[datetime, str]], cid: str, choice: Choice,
             decision_id: str, at: datetime, clicked: bool) -> list[Reward]:
    """Open the decision; a simulated click (carrying its id) rewards it at once."""
    decision = OpenDecision(decision_id, choice.content_id, choice.topics, at,
                            at + ATTRIBUTION_WINDOW, choice.features, choice.policy)
    opened, labels = open_decision(open_by_customer.get(cid, ()), decision)
    if clicked:
        opened, rewarded = attribute(opened, Reaction(f"{decision_id}:click", at, decision_id))
        labels += rewarded
    else:
        deadlines.append((decision.deadline, cid))
    open_by_customer[cid] = opened
    return labels


def _pick(options: Sequence[Candidate], rng: Random) -> Candidate:
    return options[int(rng.random() * len(options))]
