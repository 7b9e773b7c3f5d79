"""Campaign uplift on the synthetic audience: sends, reactions and the holdout comparison.

:func:`evaluate_campaigns` replays the synthetic traffic (:mod:`streams.sim.traffic`)
through :func:`agents.core.engine.handle` with a campaign book (the built-in
one by default), the way a worker would: consent first, predictions
(:class:`agents.core.predictions.Predictors`: churn risk and best send hour,
made after each consented event and passed with the next one), and the
bought-together model learning from every consented order.

**The reaction model.**  When a send trigger's ``send_at`` comes and it was
not cancelled, the customer reacts like one of the traffic's short sessions:

- a click with the documented click model's probability,
  :class:`streams.sim.simulation.ClickModel` (``0.01 + 0.20 * intent``, intent
  from the customer's hidden interests and the item's topics; nothing about
  campaigns, channels or hours enters it), a uniform 1 to 60 minutes after
  the send; the click carries the trigger's id as ``decision_id``, its
  campaign and content, and goes back through ``handle`` (so it is
  attributed, and it moves interests like any click);
- after a click, an order with the customer's own ``purchase_rate`` (the
  chance that one of their traffic sessions ends in an order), 5 to 60
  minutes later, one item on the content's topic priced as the traffic
  prices it.

Customers in a campaign's holdout get nothing: the engine records what it
would have sent and the statistics compare both groups per exposure.  The
organic traffic goes on unchanged in both groups; nothing is tuned toward
the engine.  Event time is stretched (``mean_gap_s``, one minute per message
by default) so that the stream spans weeks: nights, quiet hours, 7-day caps
and best send hours all come into play.  Exposures decided during the first
``warmup`` messages are left out of the statistics.

>>> result = evaluate_campaigns(seed=1, events=4_000, warmup=500, customers=150)
>>> result["send_triggers"] > 0, "interest-follow-up" in result["campaigns"]
(True, True)
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random
from typing import Any

from agents.core.campaigns import DEFAULT_BOOK, CampaignBook
from agents.core.cobuy import CoPurchases
from agents.core.consent import ConsentPolicy
from agents.core.customer import CustomerState
from agents.core.engine import EngineRules, FollowUpRules, handle
from agents.core.predictions import Predictions, PredictionState, Predictors
from agents.core.profile import CustomerRules, ProfileRules
from agents.core.uplift import CampaignStats
from schemas.records import (
    CHANNELS,
    Clicked,
    ContentPublished,
    Purchased,
    PurchasedItem,
    Record,
    SendTriggered,
)
from schemas.validation import parse_message
from streams.sim.simulation import ClickModel
from streams.sim.traffic import _PRICE, GroundTruth, TrafficConfig, TrafficGenerator
from streams.tag_rules import load_rules


@dataclass(order=True)
class _Due:
    """Something that happens later in event time: a delivery or a reaction."""

    at: datetime
    seq: int
    what: SendTriggered | Record


def evaluate_campaigns(seed: int, events: int = 30_000, warmup: int = 5_000,
                       customers: int = 1000, catalogue_size: int = 50,
                       mean_gap_s: float = 60.0, book: CampaignBook = DEFAULT_BOOK,
                       click_model: ClickModel | None = None) -> dict[str, Any]:
    """Per-campaign statistics and uplift, and totals, of ``book`` on one simulated audience."""
    model = click_model or ClickModel()
    traffic = TrafficGenerator(TrafficConfig(seed=seed, customers=customers,
                                             catalogue_size=catalogue_size,
                                             mean_gap_s=mean_gap_s))
    truth = traffic.truth
    now = traffic.config.start + traffic.span(events) + timedelta(days=1)
    rules = EngineRules(CustomerRules(load_rules(None), ProfileRules(200, timedelta(days=365))),
                        ConsentPolicy(), FollowUpRules(delay=timedelta(hours=1)), book=book)
    run = _Run(rules, truth, model, Random(f"{seed}:campaign-reactions"))
    for i, message in enumerate(traffic.messages(events)):
        if message.malformed or message.duplicate:
            continue
        record = parse_message(message.topic, message.key, message.value, now=now)
        if isinstance(record, ContentPublished):
            run.catalogue[record.content_id] = record
            continue
        run.until(record.occurred_at)
        run.counting = i >= warmup
        run.apply(record)
    run.until(now)
    return run.result(events, warmup, traffic.span(events))


class _Run:
    """The state of one evaluation."""

    def __init__(self, rules: EngineRules, truth: GroundTruth, model: ClickModel,
                 rng: Random) -> None:
        self.rules, self.truth, self.model, self.rng = rules, truth, model, rng
        self.catalogue: dict[str, ContentPublished] = {}
        self.states: dict[str, CustomerState] = {}
        self.predictors = Predictors()
        self.pstates: dict[str, PredictionState] = {}
        self.outlooks: dict[str, Predictions] = {}
        self.cobuy = CoPurchases()
        self.stats = CampaignStats()
        self.due: list[_Due] = []
        self.cancelled: set[str] = set()
        self.erased: dict[str, datetime] = {}
        self.counted: set[str] = set()  # exposures decided after the warmup
        self.counting = False
        self.totals: Counter[str] = Counter()
        self.seq = 0

    def until(self, at: datetime) -> None:
        """Deliver and react to everything due by ``at``, in event-time order."""
        while self.due and self.due[0].at <= at:
            what = heapq.heappop(self.due).what
            if isinstance(what, SendTriggered):
                self._deliver(what)
            else:
                self.apply(what)

    def apply(self, record: Record) -> None:
        cid: str = record.customer_id
        at: datetime = record.occurred_at
        if cid in self.erased and at <= self.erased[cid]:
            return
        content_id = getattr(record, "content_id", None)
        item = self.catalogue.get(content_id) if content_id else None
        state, effects = handle(self.states.get(cid) or CustomerState(cid), record, self.rules,
                                list(item.topics) if item else None, self.catalogue,
                                predictions=self.outlooks.get(cid), cobuy=self.cobuy)
        self.cancelled.update(c.trigger_id for c in effects.cancellations)
        if effects.erase:
            self.erased[cid] = at
            for table in (self.states, self.pstates, self.outlooks):
                table.pop(cid, None)
        elif not effects.skipped:
            self.states[cid] = state
            if self.rules.consent.may_profile(state):  # as the worker's forecaster
                kind = ("click" if isinstance(record, Clicked) else
                        "purchase" if isinstance(record, Purchased) else "other")
                self.pstates[cid], self.outlooks[cid], _ = self.predictors.observe_event(
                    self.pstates.get(cid, PredictionState()), state, kind, at)
            else:
                self.pstates.pop(cid, None)
                self.outlooks.pop(cid, None)
        for trigger in effects.triggers:
            self._later(trigger.send_at, trigger)
        for delta in effects.stats:
            if delta.sends > 0 and self.counting:
                self.counted.add(delta.exposure)
        self.stats.add(d for d in effects.stats if d.exposure in self.counted)
        if self.counting:
            self.totals["send_triggers"] += len(effects.triggers)
            self.totals["proposals"] += len(effects.proposals)
            self.totals["cancellations"] += len(effects.cancellations)
            self.totals.update(f"refused_{r.reason}" for r in effects.refused)

    def _deliver(self, trigger: SendTriggered) -> None:
        """The customer sees the send and may react (see the module doc)."""
        cid = trigger.customer_id
        if trigger.trigger_id in self.cancelled or cid in self.erased:
            return
        person, item = self.truth.customers[cid], self.truth.content[trigger.content_id]
        if self.rng.random() >= self.model.probability(person, item):
            return
        rng, topic = self.rng, item.topics[0]
        clicked_at = trigger.send_at + timedelta(minutes=rng.uniform(1, 60))
        self._later(clicked_at, Clicked(
            event_id=f"{trigger.trigger_id}:click", customer_id=cid, occurred_at=clicked_at,
            schema_version=1, content_id=item.content_id, topics=list(item.topics),
            campaign_id=trigger.campaign_id, decision_id=trigger.trigger_id,
            channel=trigger.channel if trigger.channel in CHANNELS else None))
        if trigger.trigger_id in self.counted:
            self.totals["reaction_clicks"] += 1
        if rng.random() >= person.purchase_rate:
            return
        bought_at = clicked_at + timedelta(minutes=rng.uniform(5, 60))
        price = round(max(1, int(_PRICE.get(topic, 30) * rng.uniform(0.4, 2.0))) - 0.01, 2)
        self._later(bought_at, Purchased(
            event_id=f"{trigger.trigger_id}:order", customer_id=cid, occurred_at=bought_at,
            schema_version=1, order_id=f"{trigger.trigger_id}:order",
            items=[PurchasedItem(product_id=f"sku-{topic}-{rng.randrange(500):03d}",
                                 quantity=1, unit_price=price, topics=[topic])],
            total=price, currency=person.locale.currency, campaign_id=trigger.campaign_id,
            decision_id=trigger.trigger_id))
        if trigger.trigger_id in self.counted:
            self.totals["reaction_orders"] += 1

    def _later(self, at: datetime, what: SendTriggered | Record) -> None:
        self.seq += 1
        heapq.heappush(self.due, _Due(at, self.seq, what))

    def result(self, events: int, warmup: int, span: timedelta) -> dict[str, Any]:
        totals = self.totals
        report = self.stats.report()
        return {
            "campaign_events": events,
            "campaign_warmup": warmup,
            "days": round(span / timedelta(days=1), 1),
            "send_triggers": totals["send_triggers"],
            "capped": totals["refused_capped"],
            "proposals": totals["proposals"],
            "holdout_exposures": totals["refused_holdout"],
            "cancellations": totals["cancellations"],
            "reaction_clicks": totals["reaction_clicks"],
            "reaction_orders": totals["reaction_orders"],
            "refused": {k.removeprefix("refused_"): v for k, v in sorted(totals.items())
                        if k.startswith("refused_")},
            "campaigns": report,
        }
