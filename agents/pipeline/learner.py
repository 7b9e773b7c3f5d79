"""The worker's learning loop: the content policy, its rewards and its snapshots.

:class:`Learner` holds one :class:`agents.core.learning.ContentPolicy` per
worker and everything around it that needs the shell:

- **Choosing.** :meth:`Learner.choose` is the ``choose`` function the
  consent gate (:func:`agents.core.engine.handle`) calls for a follow-up: it
  builds the context from the customer's profile, the candidates in the
  customer's language, and asks the policy with a seeded generator.
- **Rewards.** Every decision stays open for the attribution window
  (``RELEVANZ_ATTRIBUTION_WINDOW_S``). A click or purchase of the customer
  that names the decision, or falls inside the window on its content or
  topics, rewards it; :meth:`Learner.expire` closes what the window passed
  as non-clicks. Its clock is the newest event time the worker has seen, so
  delayed labels are settled by a timer on event time, never by waiting in
  the hot path. Only customers who allow profiling feed the model; an
  erasure or a profiling revocation drops their open decisions.
- **Quality.** Each reward first scores the click probability the policy
  predicts now against the label (progressive validation: River's ROC AUC
  and log loss), and an ADWIN detector watches the squared error; a drift
  after the warm-up is logged (``model_drift``), emitted on the ``model-drift``
  topic and shown on ``/v1/status``.
- **Snapshots.** The policy is saved to the store as a versioned,
  checksummed snapshot every ``RELEVANZ_SNAPSHOT_INTERVAL_S`` and when the
  worker stops, and loaded from the newest snapshot when it starts, so a
  restarted or rebalanced worker resumes with what was learnt.

Several workers each learn from the rewards of the customers they own. To
save, a worker reads the newest snapshot; when another worker stored one
since this worker's base, it adds what it learnt since its base to that one
(:func:`agents.core.learning.merged`: the changes of linear models add up)
and stores the result one version up, which becomes its new base. Two
workers saving in the same instant can still write the same version; the
later write wins and the other's interval is lost (a compare-and-set write
would close that gap). Open decisions live in memory: a restart loses the
labels of decisions still waiting, not what was learnt.
"""

from __future__ import annotations

import copy
import heapq
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from river import drift, metrics

from agents.core.candidates import Candidate, candidates, variant
from agents.core.catalogue import CatalogueIndex
from agents.core.consent import ConsentPolicy
from agents.core.customer import CustomerState
from agents.core.engine import Chosen
from agents.core.learning import ContentPolicy, PolicyConfig, context_for, explain, merged
from agents.core.predictions import DriftDetected
from agents.core.rewards import (
    OpenDecision,
    Reward,
    attribute,
    expire,
    open_decision,
    reaction_of,
)
from agents.core.snapshots import SnapshotInvalid
from schemas.records import Clicked, ContentPublished, DecisionMade, Purchased
from streams.store import Store

log = structlog.get_logger(__name__)

MODEL_ID = "content-policy"
#: Candidates kept for follow-ups at most (about catalogue size x languages spoken).
_VARIANTS_MAX = 100_000
# River's constructors are untyped; named once here.
_ADWIN: Any = drift.ADWIN


@dataclass
class Learner:
    """One worker's content policy with its open decisions."""

    config: PolicyConfig
    attribution_window: timedelta
    interest_half_life: timedelta
    seed: int = 0
    policy: ContentPolicy = field(init=False)
    #: The policy as last loaded or saved: what this worker's learning is counted from.
    base: ContentPolicy = field(init=False)
    rewards: int = 0
    clicks_rewarded: int = 0
    #: Newest event time seen: the clock of the attribution window.
    watermark: datetime | None = None
    _open: dict[str, tuple[OpenDecision, ...]] = field(default_factory=dict)
    _deadlines: list[tuple[datetime, str]] = field(default_factory=list)
    #: Topics of the items chosen, for attributing purchases by topic.
    _topics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _rng: random.Random = field(init=False)
    #: Rewards before a drift counts: a young model's error falls as it learns.
    drift_warmup: int = 500
    drifts: list[dict[str, object]] = field(default_factory=list)
    _roc_auc: Any = field(default_factory=metrics.ROCAUC)
    _log_loss: Any = field(default_factory=metrics.LogLoss)
    _detector: Any = field(default_factory=lambda: _ADWIN(delta=0.002))
    _found: list[DriftDetected] = field(default_factory=list)
    #: Candidates of ``decide`` per (channel, slot, language): catalogue version, the
    #: decision times they hold for (from, until) and the list.
    _offered: dict[tuple[str, str, str | None],
                   tuple[int, datetime, datetime | None, list[Candidate]]] = field(
        default_factory=dict)
    #: Follow-up candidates per (content_id, language), with the item version they are of.
    _variants: dict[tuple[str, str | None], tuple[ContentPublished, Candidate]] = field(
        default_factory=dict)

    def __post_init__(self) -> None:
        self.policy = ContentPolicy(self.config, MODEL_ID)
        self.base = copy.deepcopy(self.policy)
        self._rng = random.Random(self.seed)

    # -- choosing ------------------------------------------------------------------

    def choose(self, state: CustomerState, channel: str, at: datetime,
               items: Sequence[ContentPublished]) -> Chosen | None:
        """The policy's pick among ``items`` for ``state`` on ``channel`` (the engine's hook)."""
        language = state.master.language if state.master is not None else None
        options = [self._candidate(item, language) for item in items]
        context = context_for(state, channel, "follow-up", at, self.interest_half_life)
        choice = self.policy.choose(context, options, self._rng)
        if choice is None:
            return None
        self._topics[choice.content_id] = choice.topics
        return Chosen(choice.content_id, choice.language, choice.fallback is not None,
                      choice.policy, choice.score, tuple(explain(choice)), choice.features)

    def decide(self, state: CustomerState, channel: str, slot: str, at: datetime,
               catalogue: CatalogueIndex | Iterable[ContentPublished], consent: ConsentPolicy
               ) -> tuple[DecisionMade, Chosen] | None:
        """A decision for a touchpoint (``POST /v1/decide``), or None when nothing fits.

        Without consent to personalisation the answer is the non-personalised
        default (the most clicked candidate now), marked ``neutral``, and the
        profile is not read.  From a :class:`CatalogueIndex` the candidates
        are kept per channel, slot and language until the catalogue changes
        or an item's validity begins or ends.
        """
        language = state.master.language if state.master is not None else None
        options = self._candidates(catalogue, channel, slot, at, language)
        if not options:
            return None
        cid = state.customer_id
        personalise = consent.may_personalise(state) and consent.may_profile(state)
        if personalise:
            context = context_for(state, channel, slot, at, self.interest_half_life)
            choice = self.policy.choose(context, options, self._rng)
            assert choice is not None
            chosen = Chosen(choice.content_id, choice.language, choice.fallback is not None,
                            choice.policy, choice.score, tuple(explain(choice)),
                            choice.features)
            basis = "consent: personalisation and profiling granted"
        else:
            counts = self.policy.popularity.counts(options, at)
            top = max(counts)
            shares = [n / top for n in counts] if top > 0.0 else [0.0] * len(counts)
            at_best = max(range(len(options)),
                          key=lambda i: (shares[i], options[i].content_id))
            best = options[at_best]
            chosen = Chosen(best.content_id, best.language, best.fallback is not None,
                            "neutral", shares[at_best],
                            ("neutral: non-personalised default, the most clicked candidate now",))
            basis = "consent: no personalisation, so not personalised"
        self._topics[chosen.content_id] = next(
            o.topics for o in options if o.content_id == chosen.content_id)
        decision = DecisionMade(
            decision_id=f"{cid}:{slot}:{at.isoformat()}:{self._rng.getrandbits(32):08x}",
            customer_id=cid, decided_at=at, schema_version=1, slot=slot, channel=channel,
            content_id=chosen.content_id, variant_language=chosen.language,
            language_fallback=chosen.fell_back, policy=chosen.policy,
            reasons=[*chosen.reasons, basis], caused_by="POST /v1/decide", score=chosen.score)
        return decision, chosen

    def _candidate(self, item: ContentPublished, language: str | None) -> Candidate:
        """``item`` as a candidate for a customer speaking ``language`` (kept per item version)."""
        key = (item.content_id, language)
        kept = self._variants.get(key)
        if kept is None or kept[0] is not item:
            if len(self._variants) >= _VARIANTS_MAX:
                self._variants.clear()  # items long gone would otherwise stay
            lang, fallback = variant(item, language)
            kept = self._variants[key] = (item, Candidate(
                item.content_id, tuple(item.topics), lang, fallback, item.campaign_id))
        return kept[1]

    def _candidates(self, catalogue: CatalogueIndex | Iterable[ContentPublished], channel: str,
                    slot: str, at: datetime, language: str | None) -> list[Candidate]:
        """:func:`candidates`, kept while the index and every item's validity stay as they were."""
        if not isinstance(catalogue, CatalogueIndex):
            return candidates(catalogue, channel, slot, at, language)
        key = (channel, slot, language)
        kept = self._offered.get(key)
        if kept is not None:
            version, since, until, found = kept
            if version == catalogue.version and since <= at and (until is None or at < until):
                return found
        found = candidates(catalogue, channel, slot, at, language)
        # Until the next moment an item of this touchpoint becomes valid or expires.
        bounds = [t for item in catalogue.offered(channel, slot)
                  for t in (item.valid_from, item.valid_until) if t is not None and t > at]
        self._offered[key] = (catalogue.version, at, min(bounds, default=None), found)
        return found

    # -- rewards ---------------------------------------------------------------------

    def opened(self, decision: DecisionMade, chosen: Chosen) -> None:
        """Keep ``decision`` open for its reward."""
        cid = decision.customer_id
        deadline = decision.decided_at + self.attribution_window
        topics = self._topics.get(decision.content_id, ())
        item = OpenDecision(decision.decision_id, decision.content_id, topics,
                            decision.decided_at, deadline, chosen.features, decision.policy)
        self._open[cid], closed = open_decision(self._open.get(cid, ()), item)
        heapq.heappush(self._deadlines, (deadline, cid))
        self._learn(closed)

    def react(self, record: Clicked | Purchased) -> None:
        """A consented click or purchase: popularity, and the reward of a matching decision."""
        self._tick(record.occurred_at)
        if isinstance(record, Clicked) and record.content_id:
            self.policy.observe_click(record.content_id, record.occurred_at)
        cid = record.customer_id
        open_ = self._open.get(cid)
        if open_:
            rest, rewards = attribute(open_, reaction_of(record))
            self._store_open(cid, rest)
            self._learn(rewards)

    def forget(self, customer_id: str) -> None:
        """Drop the customer's open decisions unlearnt (erasure or no more profiling)."""
        self._open.pop(customer_id, None)

    def expire(self, until: datetime | None = None) -> int:
        """Close, as non-clicks, every open decision whose window ended by ``until`` (the
        worker's low watermark; default: the newest event time this learner saw)."""
        watermark = self.watermark if until is None else until
        if watermark is None:
            return 0
        closed = 0
        while self._deadlines and self._deadlines[0][0] <= watermark:
            _, cid = heapq.heappop(self._deadlines)
            open_ = self._open.get(cid)
            if not open_:
                continue
            rest, rewards = expire(open_, watermark)
            self._store_open(cid, rest)
            self._learn(rewards)
            closed += len(rewards)
        return closed

    def observe_time(self, at: datetime) -> None:
        """Move the watermark (any consumed customer event counts)."""
        self._tick(at)

    def _tick(self, at: datetime) -> None:
        if self.watermark is None or at > self.watermark:
            self.watermark = at

    def _store_open(self, cid: str, rest: tuple[OpenDecision, ...]) -> None:
        if rest:
            self._open[cid] = rest
        else:
            self._open.pop(cid, None)

    def _learn(self, rewards: Sequence[Reward]) -> None:
        for reward in rewards:
            self._evaluate(reward)
            self.policy.learn(reward.decision.features, reward.clicked)
            self.rewards += 1
            self.clicks_rewarded += int(reward.clicked)

    def _evaluate(self, reward: Reward) -> None:
        """Progressive validation: score the prediction before learning the label."""
        p = self.policy.predict_proba_one(reward.decision.features)[True]
        p = min(max(p, 1e-6), 1 - 1e-6)
        y = bool(reward.clicked)
        self._roc_auc.update(y, {True: p, False: 1 - p})
        self._log_loss.update(y, {True: p, False: 1 - p})
        self._detector.update((float(y) - p) ** 2)
        if self._detector.drift_detected and self.rewards >= self.drift_warmup:
            found = {"model": MODEL_ID, "at": reward.at.isoformat(), "rewards": self.rewards,
                     "error": round(float(self._detector.estimation), 5)}
            self.drifts = [*self.drifts[-9:], found]
            self._found.append(DriftDetected(
                MODEL_ID, reward.at, self.rewards, float(self._roc_auc.get()),
                float(self._log_loss.get()), float(self._detector.estimation)))
            log.warning("model_drift", **found)

    def take_drifts(self) -> list[DriftDetected]:
        """The drifts found since the last call (for the worker to emit on ``model-drift``)."""
        found, self._found = self._found, []
        return found

    def quality(self) -> dict[str, object]:
        """Progressive-validation figures of the content policy, for operators."""
        return {"model": MODEL_ID, "version": self.policy.model_version,
                "examples": self.rewards, "clicks": self.clicks_rewarded,
                "roc_auc": round(float(self._roc_auc.get()), 4),
                "log_loss": round(float(self._log_loss.get()), 4),
                "drifts": len(self.drifts), "open_decisions": self.open_decisions}

    @property
    def open_decisions(self) -> int:
        """Decisions waiting for their reward."""
        return sum(len(v) for v in self._open.values())

    # -- snapshots ---------------------------------------------------------------------

    async def load(self, store: Store) -> None:
        """Resume from the newest snapshot in the store (start fresh when there is none)."""
        snapshot = await store.latest_snapshot(MODEL_ID)
        if snapshot is None:
            log.info("model_fresh", model=MODEL_ID)
            return
        try:
            self.policy = ContentPolicy.from_snapshot(snapshot.blob, snapshot.checksum)
            self.base = copy.deepcopy(self.policy)
        except (SnapshotInvalid, TypeError) as exc:
            # A snapshot this release cannot read is kept, not overwritten blindly:
            # the next save writes a higher version next to it.
            log.warning("model_snapshot_unreadable", model=MODEL_ID, version=snapshot.version,
                        error=str(exc))
            self.policy.version = snapshot.version
            return
        log.info("model_resumed", model=MODEL_ID, version=self.policy.model_version)

    async def save(self, store: Store, now: datetime) -> int:
        """Store the policy as the next version; returns that version."""
        latest = await store.latest_snapshot(MODEL_ID)
        if latest is not None and latest.version > self.base.version:
            try:
                theirs = ContentPolicy.from_snapshot(latest.blob, latest.checksum)
            except (SnapshotInvalid, TypeError):
                theirs = None
            if theirs is not None:
                # Another worker saved since our base: add our learning to theirs.
                self.policy = merged(theirs, self.base, self.policy, now)
        version = max(latest.version if latest else 0, self.policy.version) + 1
        blob, checksum = self.policy.to_snapshot(version, now)
        await store.put_snapshot(MODEL_ID, version, blob, checksum, now)
        self.base = copy.deepcopy(self.policy)
        return version
