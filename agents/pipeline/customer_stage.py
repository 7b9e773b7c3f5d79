"""The customer-state stage: consent gate, profile, interests, follow-ups and erasure.

Called by the ingest agent with each batch's new, valid records.  It reads
the batch's customers through the cache in one store call, passes every
record through :func:`agents.core.engine.handle` (consent first), and returns
the messages to emit: interest-tag changes, decisions, send triggers and
their cancellations, and ``customer-erased`` events.  Content items feed the
catalogue.

An erasure request is carried out at :meth:`CustomerStage.commit`, before the
batch's states are written: the customer's pseudonym goes on the forget-list,
then every stored row of the customer is deleted.  Events of an erased
customer up to the request's event time are left out (not applied, not
recorded in the ledger), so neither a redelivery nor a replay brings the
customer back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from agents.core.accounting import Accounting
from agents.core.cobuy import CoPurchases
from agents.core.customer import CustomerPredictions, CustomerState
from agents.core.engine import Chosen, Effects, EngineRules, handle, went_quiet
from agents.core.interests import TagChange
from agents.core.predictions import DriftDetected, HourProfile
from agents.core.uplift import CampaignCounts
from agents.core.watermarks import LowWatermark
from agents.ingest import Output
from agents.pipeline.campaign_rows import stored, stored_decision
from agents.pipeline.customer_cache import CustomerCache
from agents.pipeline.forecasts import Forecaster, kind_of, local_hour, units_of
from agents.pipeline.lapses import QuietWatch
from agents.pipeline.learner import Learner
from agents.pipeline.sessions import SessionStage
from schemas.records import (
    Clicked,
    ConsentChanged,
    ContentPublished,
    CustomerErased,
    DecisionMade,
    InterestTagChanged,
    ModelDrifted,
    PageView,
    ProfileUpdated,
    Purchased,
    Record,
    SendProposed,
)
from streams.catalogue import Catalogue
from streams.logs import customer_ref
from streams.privacy import ForgetList
from streams.store import BatchWrite, EventKey

log = structlog.get_logger(__name__)


@dataclass
class CustomerStage:
    """Applies customer events to cached state behind the consent gate."""

    cache: CustomerCache
    rules: EngineRules
    ledger_ttl_s: float
    history_ttl_s: float
    catalogue: Catalogue
    forget_list: ForgetList
    accounting: Accounting
    #: True while an operator has paused sends (the kill switch or the follow-up campaign).
    sends_paused: Callable[[], bool] = lambda: False
    #: The learned content policy; None: follow-ups take the newest item.
    learner: Learner | None = None
    #: Per-customer predictions (purchase, churn, send hour); None: none are made.
    forecaster: Forecaster | None = None
    #: True while one campaign may not send (its pause or the kill switch); None: none is.
    campaign_paused: Callable[[str], bool] | None = None
    #: Products bought together, learnt online, for cross-sell (None: no cross-sell).
    cobuy: CoPurchases | None = None
    #: Keep campaign statistics and proposals (replay rebuilds state only: it does not).
    count_campaigns: bool = True
    #: Win-back checks of quiet customers, fired by the watermark (None: no win-back).
    quiet: QuietWatch | None = None
    #: Page views into visitors' sessions (None: page views are only counted).
    sessions: SessionStage | None = None
    #: Proposals and statistics changes of the current batch, written at commit.
    _proposals: list[SendProposed] = field(default_factory=list)
    _stats: list[CampaignCounts] = field(default_factory=list)
    #: Decisions of the current batch, kept at commit for the customer view.
    _decisions: list[DecisionMade] = field(default_factory=list)
    tag_changes: int = 0
    #: Newest event time applied (the clock below when no partitions are tracked).
    watermark: datetime | None = None
    #: Event-time progress per input partition, fed by whoever reads the partitions (the
    #: ingest agent, ``relevanz evaluate``): its low watermark is the clock that opens and
    #: labels examples, closes decision windows and fires win-back checks.
    progress: LowWatermark | None = None
    #: Erasures of the current batch: customer id -> event time of the request.
    _erasures: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    #: Ledger keys of the current batch that must not be recorded.
    _unrecorded: set[EventKey] = field(default_factory=set)
    #: Events of the current batch applied so far, per customer, with their times.
    _applied: dict[str, list[tuple[str, datetime]]] = field(default_factory=dict)

    async def apply(self, records: Sequence[Record], now: datetime
                    ) -> tuple[list[Output], dict[int, str]]:
        """Apply new records in event-time order; returns the messages they cause and
        the reason for each record (by position) that the core failed to apply."""
        for record in records:
            if isinstance(record, ContentPublished):
                self.catalogue.learn(record)
        customer_ids = [r.customer_id for r in records
                        if not isinstance(r, ContentPublished | PageView)]
        states = await self.cache.get_many(customer_ids, now)
        outputs: list[Output] = []
        failed: dict[int, str] = {}
        if self.sessions is not None:
            views = [r for r in records if isinstance(r, PageView)]
            if views:
                outputs.extend(await self.sessions.apply(views, now))
        # In event-time order within the batch, whatever order the topics were read
        # in (ties: profile, consent, click, purchase, then event id).
        for position in sorted(range(len(records)), key=lambda i: _event_order(records[i])):
            incoming = records[position]
            if isinstance(incoming, ContentPublished | PageView):
                continue
            # A consent change may release parked events: they are applied next, as
            # though they arrived now (in event-time order among themselves).
            queue: list[Record] = [incoming]
            while queue:
                record = queue.pop(0)
                cid: str = record.customer_id
                if self._forgotten(record):
                    continue
                try:
                    state, effects = self._handle(states[cid], record)
                except Exception as exc:
                    log.exception("apply_failed", customer=customer_ref(cid),
                                  event_id=record.event_id)
                    if record is incoming:
                        failed[position] = (
                            f"could not be applied ({type(exc).__name__}: {exc}); "
                            "please report this message to the Relevanz maintainers")
                    continue
                queue.extend(self._take(record, state, effects, states, now, outputs))
        if self.quiet is not None:
            outputs.extend(await self._went_quiet(self.quiet, now))
        self._expire(outputs)
        return outputs, failed

    def _forgotten(self, record: Record) -> bool:
        """True (and counted) when the customer was erased after this event: no trace of it."""
        cid: str = record.customer_id
        erased_at = self._erased_at(cid)
        if erased_at is None or record.occurred_at > erased_at:
            return False
        self.accounting.forgotten += 1
        self._unrecorded.add((cid, record.event_id))
        return True

    def _handle(self, state: CustomerState, record: Record) -> tuple[CustomerState, Effects]:
        """What the core makes of ``record`` (consent first)."""
        content_id = getattr(record, "content_id", None)
        topics = self.catalogue.topics_of(content_id) if content_id else None
        outlook = LocalOutlook.of(state, record.occurred_at, self.forecaster)
        learner = self.learner
        return handle(
            state, record, self.rules, topics, self.catalogue.items,
            sends_paused=self.sends_paused(),
            choose=learner.choose if learner is not None else None,
            campaign_paused=self.campaign_paused, predictions=outlook, cobuy=self.cobuy,
            watermark=self.progress.holding if self.progress is not None else self.watermark)

    def _take(self, record: Record, state: CustomerState, effects: Effects,
              states: dict[str, CustomerState], now: datetime, outputs: list[Output]
              ) -> Sequence[Record]:
        """Take in what the core decided for ``record``; returns the events it released."""
        cid: str = record.customer_id
        counts = self.accounting
        outputs.extend(("send-cancellations", cid.encode(), c) for c in effects.cancellations)
        counts.cancellations += len(effects.cancellations)
        if self.count_campaigns:
            self._stats.extend(effects.stats)
        if effects.erase:
            self._erase(record, states, now, outputs)
            return ()
        self._applied.setdefault(cid, []).append((record.event_id, record.occurred_at))
        self._tick(record.occurred_at)
        if effects.skipped:
            counts.skipped_without_consent += 1
            states[cid] = state  # the event is parked in it
            self.cache.put(state)
            if self.learner is not None:
                self.learner.observe_time(record.occurred_at)
            return ()
        if effects.released:
            counts.skipped_without_consent -= len(effects.released)
            counts.released_after_consent += len(effects.released)
        forecaster = self.forecaster
        if forecaster is not None:
            if self.rules.consent.may_profile(state):
                state, drifts = forecaster.observe(state, kind_of(record),
                                                   record.occurred_at, units_of(record))
                outputs.extend(_drift_messages(drifts))
            else:
                forecaster.forget(cid)
        states[cid] = state
        self.cache.put(state)
        self._emit(record, state, effects, outputs)
        return effects.released

    def _erase(self, record: Record, states: dict[str, CustomerState], now: datetime,
               outputs: list[Output]) -> None:
        """The customer asked to be erased: forget them from this batch on."""
        cid: str = record.customer_id
        self._erasures[cid] = (record.occurred_at, record.event_id)
        self._unrecorded.add((cid, record.event_id))
        # Earlier events of this batch are erased too: no ledger rows for them.
        self._unrecorded.update((cid, eid) for eid, at in self._applied.pop(cid, ())
                                if at <= record.occurred_at)
        states[cid] = CustomerState(cid)
        self.cache.drop(cid)
        outputs.append(("customer-erased", cid.encode(), CustomerErased(
            event_id=f"{cid}:erased:{record.event_id}", customer_id=cid,
            requested_at=record.occurred_at, erased_at=now, schema_version=1,
            caused_by=record.event_id)))
        self.accounting.erasures += 1
        if self.learner is not None:
            self.learner.forget(cid)
        if self.forecaster is not None:
            self.forecaster.forget(cid)

    def _emit(self, record: Record, state: CustomerState, effects: Effects,
              outputs: list[Output]) -> None:
        """The messages and counts of an applied record; feed the learner."""
        cid: str = record.customer_id
        key = cid.encode()
        tags = [("interest-tags", key, _tag_record(cid, c)) for c in effects.tag_changes]
        self.tag_changes += len(tags)
        outputs.extend(tags)
        outputs.extend(self._sent(cid, effects))
        if self.learner is not None:
            self._learn(self.learner, record, state, effects.chosen)
        if self.quiet is not None and state.predictions is not None:
            self.quiet.seen(cid, state.last_event_at)

    def _expire(self, outputs: list[Output]) -> None:
        """End of batch: the models' expiries, and the drifts they found."""
        clock = self.event_clock()
        if self.learner is not None:
            if clock is not None:  # None: no partition has been read to a time yet
                self.learner.expire(clock)
            outputs.extend(_drift_messages(self.learner.take_drifts()))
        if self.forecaster is not None:
            outputs.extend(_drift_messages(self.forecaster.expire(clock)))

    def event_clock(self) -> datetime | None:
        """The low watermark over the input partitions when they are tracked, else the
        newest event time applied (records handed in with no partition to follow)."""
        return self.progress.value if self.progress is not None else self.watermark

    async def _went_quiet(self, watch: QuietWatch, now: datetime) -> list[Output]:
        """Decide the win-back checks the watermark passed, as of each check's time."""
        outputs: list[Output] = []
        learner = self.learner
        while checks := watch.due(self.event_clock()):
            states = await self.cache.get_many([q.customer_id for q in checks], now)
            for quiet in checks:
                cid = quiet.customer_id
                before = states[cid]
                if self._erased_at(cid) is not None:
                    watch.forget(cid)
                    continue
                state, effects = went_quiet(
                    before, quiet, self.rules, self.catalogue.items,
                    predictions=LocalOutlook.of(before, quiet.occurred_at, self.forecaster),
                    sends_paused=self.sends_paused(),
                    choose=learner.choose if learner is not None else None,
                    campaign_paused=self.campaign_paused)
                watch.again(quiet)
                if state is not before:
                    states[cid] = state
                    self.cache.put(state)
                outputs.extend(self._sent(cid, effects))
                if self.count_campaigns:
                    self._stats.extend(effects.stats)
                if learner is not None:
                    for decision, choice in effects.chosen:
                        learner.opened(decision, choice)
        return outputs

    def _sent(self, cid: str, effects: Effects) -> list[Output]:
        """The decisions, triggers and proposals of ``effects``, counted and kept."""
        key, counts = cid.encode(), self.accounting
        outputs: list[Output] = [("decisions", key, d) for d in effects.decisions]
        outputs.extend(("send-triggers", key, t) for t in effects.triggers)
        outputs.extend(("send-proposals", key, p) for p in effects.proposals)
        counts.decisions += len(effects.decisions)
        counts.send_triggers += len(effects.triggers)
        counts.proposals += len(effects.proposals)
        for refusal in effects.refused:
            counts.refused[refusal.reason] = counts.refused.get(refusal.reason, 0) + 1
        if self.count_campaigns:
            self._proposals.extend(effects.proposals)
            self._decisions.extend(effects.decisions)
        return outputs

    def _tick(self, at: datetime) -> None:
        if self.watermark is None or at > self.watermark:
            self.watermark = at

    def _learn(self, learner: Learner, record: Record, state: CustomerState,
               chosen: Sequence[tuple[DecisionMade, Chosen]]) -> None:
        """Feed the policy: rewards of consented reactions, new open decisions."""
        if isinstance(record, Clicked | Purchased):
            learner.react(record)  # only applied events get here: profiling is allowed
        elif isinstance(record, ConsentChanged):
            learner.observe_time(record.occurred_at)
            if not self.rules.consent.may_profile(state):
                learner.forget(state.customer_id)
        else:
            learner.observe_time(record.occurred_at)
        for decision, choice in chosen:
            learner.opened(decision, choice)

    def _erased_at(self, customer_id: str) -> datetime | None:
        pending = self._erasures.get(customer_id)
        known = self.forget_list.requested_at(customer_id)
        if pending is None:
            return known
        return pending[0] if known is None else max(pending[0], known)

    def rollback(self) -> None:
        """Undo what ``apply`` changed since the last commit (the batch will be retried)."""
        self.cache.discard_changes()
        if self.sessions is not None:
            self.sessions.rollback()
        self._proposals.clear()
        self._stats.clear()
        self._decisions.clear()
        self._erasures.clear()
        self._unrecorded.clear()
        self._applied.clear()
        if self.quiet is not None:
            self.quiet.rollback()

    async def commit(self, batch: BatchWrite, now: datetime) -> None:
        """Carry out the batch's erasures, then write ``batch`` with its states,
        campaign counters and decisions."""
        store = self.cache.store
        if self.sessions is not None:
            # Before the ledger: a redelivered page view is known to its visitor's state.
            await self.sessions.commit(now)
        for cid, (requested_at, _) in self._erasures.items():
            ref = self.forget_list.pseudonyms.ref(cid)
            await store.forget(ref, requested_at)
            await store.delete_customer(cid)
        recorded = [key for key in batch.events if key not in self._unrecorded]
        # Proposals before the states: a proposal whose customer state (contact log)
        # is stored must be there for an operator; a redelivery stores it once.
        if self._proposals:
            await store.put_proposals([stored(p) for p in self._proposals])
        # Counters, decisions and the outbox go with the states (one transaction in the
        # embedded store; see Store.write_batch for Cassandra's order).
        await self.cache.flush(
            replace(batch, events=recorded, stats=list(self._stats),
                    decisions=[stored_decision(d) for d in self._decisions]),
            now, self.ledger_ttl_s, self.history_ttl_s)
        self._proposals.clear()
        self._stats.clear()
        self._decisions.clear()
        for cid, (requested_at, _) in self._erasures.items():
            self.forget_list.add(cid, requested_at)
            log.info("customer_erased", customer=customer_ref(cid))
        self._erasures.clear()
        self._unrecorded.clear()
        self._applied.clear()
        if self.quiet is not None:
            self.quiet.commit()


class LocalOutlook:
    """A customer's stored predictions as the trigger rules read them, in the time zone now.

    The stored ``best_hour`` is local to the time zone the customer had at
    the last prediction; a profile that moved the customer since (or arrived
    after their clicks, as topics interleave differently in a replay) would
    shift every scheduled send by the difference.  The best hour is therefore
    made local from the UTC hour profile when it is read, in the zone the
    customer has when the send is planned.
    """

    __slots__ = ("_at", "_forecaster", "_predictions", "_state", "_zone")

    def __init__(self, predictions: CustomerPredictions, zone: str | None, at: datetime,
                 state: CustomerState | None = None, forecaster: Forecaster | None = None
                 ) -> None:
        self._predictions, self._zone, self._at = predictions, zone, at
        self._state, self._forecaster = state, forecaster

    @classmethod
    def of(cls, state: CustomerState, at: datetime, forecaster: Forecaster | None = None
           ) -> LocalOutlook | None:
        """The outlook of ``state`` at ``at`` (None without predictions); with a
        ``forecaster``, the churn risk is answered as of ``at`` by its current model."""
        if state.predictions is None:
            return None
        return cls(state.predictions, state.master.time_zone if state.master else None, at,
                   state, forecaster)

    @property
    def churn(self) -> float:
        """Chance of no event within the churn horizon, as of the outlook's time.

        Computed when a rule asks (most events reach no rule that does).
        """
        if self._forecaster is not None and self._state is not None:
            now = self._forecaster.churn_at(self._state, self._at)
            if now is not None:
                return now
        return self._predictions.churn

    @property
    def best_hour(self) -> int | None:
        """Local hour of day the customer engages most, in their time zone now."""
        p = self._predictions
        return local_hour(HourProfile(p.hours, p.hours_at).best_hour(), self._at, self._zone)


#: Which of several customer events at the same time is applied first.
_KIND_ORDER = {ProfileUpdated: 0, ConsentChanged: 1, Clicked: 2, Purchased: 3}


def _event_order(record: Record) -> tuple[datetime, int, str]:
    return record.occurred_at, _KIND_ORDER.get(type(record), 4), record.event_id


def _drift_messages(drifts: Sequence[DriftDetected]) -> list[Output]:
    return [("model-drift", d.model_id.encode(), ModelDrifted(
        event_id=f"{d.model_id}:drift:{d.examples}:{d.at.isoformat()}", model_id=d.model_id,
        detected_at=d.at, schema_version=1, examples=d.examples, error=max(d.error, 0.0),
        roc_auc=d.roc_auc, log_loss=d.log_loss)) for d in drifts]


def _tag_record(customer_id: str, change: TagChange) -> InterestTagChanged:
    return InterestTagChanged(
        # Unique per customer and change, and the same when replayed.
        event_id=f"{customer_id}:{change.tag}:{change.change}:{change.at.isoformat()}",
        customer_id=customer_id,
        occurred_at=change.at,
        schema_version=1,
        tag=change.tag,
        topic=change.topic,
        change=change.change,
        score=change.score,
        caused_by=change.caused_by,
    )
