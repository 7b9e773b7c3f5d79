"""How good the per-customer predictions are on the simulated audience.

:func:`evaluate_predictions` replays the traffic through the customer core
and :class:`agents.core.predictions.Predictors` exactly as a worker would
(consent respected, a timer sweep labelling expired examples every
``sweep`` events) and reports the models' progressive-validation figures
and drift count.  The best send hour is checked against the ground truth:
each customer has a usual local hour (:class:`streams.sim.traffic.CustomerTruth`
``active_hour``) and half of the traffic's sessions go to customers at
their usual hour, so for customers with enough engagement the predicted
hour should often be within an hour of it (by chance: 3 in 24).

The traffic spaces events ``mean_gap_s`` apart so that the stream covers
days, and the horizons are scaled to it (by default a purchase within a
day, churn as three days without an event, examples an hour apart).

>>> result = evaluate_predictions(seed=1, events=3_000, customers=100)
>>> 0.0 <= result["send_hour_within_1h"] <= 1.0, "purchase_roc_auc" in result
(True, True)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agents.core.consent import ConsentPolicy
from agents.core.customer import CustomerState
from agents.core.predictions import PredictionRules, PredictionState, Predictors
from agents.core.profile import CustomerRules, ProfileRules, apply_event
from schemas.records import Clicked, ContentPublished, Purchased
from schemas.validation import parse_message
from streams.sim.traffic import TrafficConfig, TrafficGenerator
from streams.tag_rules import load_rules


def evaluate_predictions(seed: int, events: int = 30_000, customers: int = 1000,
                         mean_gap_s: float = 30.0, rules: PredictionRules | None = None,
                         sweep: int = 500, min_engagements: int = 5) -> dict[str, Any]:
    """Progressive-validation figures of the outcome models and the send-hour hit rate."""
    traffic = TrafficGenerator(TrafficConfig(seed=seed, customers=customers,
                                             mean_gap_s=mean_gap_s))
    now = traffic.config.start + traffic.span(events) + timedelta(days=1)
    customer_rules = CustomerRules(load_rules(None), ProfileRules(200, timedelta(days=365)))
    predictors = Predictors(rules or PredictionRules(
        purchase_horizon=timedelta(days=1), churn_horizon=timedelta(days=3),
        hour_half_life=timedelta(days=7), example_interval=timedelta(hours=1)))
    consent = ConsentPolicy()
    catalogue: dict[str, ContentPublished] = {}
    states: dict[str, CustomerState] = {}
    pending: dict[str, PredictionState] = {}
    engagements: dict[str, int] = {}
    drifts = 0
    for i, message in enumerate(traffic.messages(events)):
        if message.malformed or message.duplicate:
            continue
        record = parse_message(message.topic, message.key, message.value, now=now)
        if isinstance(record, ContentPublished):
            catalogue[record.content_id] = record
            continue
        at, cid = record.occurred_at, record.customer_id
        if i % sweep == 0:  # the timer: label what expired, for every customer
            for other, pstate in pending.items():
                pending[other], found = predictors.expire(pstate, at, other)
                drifts += len(found)
        state = states.get(cid) or CustomerState(cid)
        if not consent.may_profile(state) and isinstance(record, Clicked | Purchased):
            continue  # no profiling, no predictions from behaviour
        topics = (catalogue[record.content_id].topics
                  if isinstance(record, Clicked) and record.content_id in catalogue else None)
        state, _ = apply_event(state, record, customer_rules, topics)
        states[cid] = state
        kind = ("click" if isinstance(record, Clicked) else
                "purchase" if isinstance(record, Purchased) else "other")
        engagements[cid] = engagements.get(cid, 0) + (kind != "other")
        pending[cid], _, found = predictors.observe_event(
            pending.get(cid, PredictionState()), state, kind, at)
        drifts += len(found)
    judged = hits = 0
    for cid, count in engagements.items():
        best = pending[cid].hours.best_hour() if cid in pending else None
        if count >= min_engagements and best is not None:
            judged += 1
            true_hour = traffic.truth.customers[cid].active_hour
            hits += min((best - true_hour) % 24, (true_hour - best) % 24) <= 1
    purchase, churn = predictors.quality()
    return {
        "purchase_roc_auc": purchase["roc_auc"], "purchase_log_loss": purchase["log_loss"],
        "purchase_examples": purchase["examples"],
        "churn_roc_auc": churn["roc_auc"], "churn_log_loss": churn["log_loss"],
        "churn_examples": churn["examples"], "drifts": drifts,
        "send_hour_customers": judged,
        "send_hour_within_1h": round(hits / judged, 4) if judged else 0.0,
    }
