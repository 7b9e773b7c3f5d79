"""Per-customer predictions: purchase probability, churn risk, best send hour.

Updated event by event from the customer's own events:

- **Purchase probability**: the chance of an order within ``purchase_horizon``
  of now; **churn risk**: the chance of no event at all within
  ``churn_horizon``.  Each is one River ``LogisticRegression`` shared by all
  customers (:class:`OutcomeModel`) over :func:`customer_features`
  (recency, frequency, monetary value, recent clicks).  Labels come late, so
  each customer has at most one open :class:`Example` per outcome: opened
  at an event with the prediction made then, resolved by a later event (an
  order: purchase yes; any event: churn no) or, by the timer, when the
  horizon has passed (purchase no, churn yes).  A customer's examples of
  an outcome are opened at least ``example_spacing`` (a day) apart: without
  it, every event of an active customer would resolve the churn example
  opened at the previous one, minutes before, and learn a near-copy of it,
  so the model would learn mostly from the most active customers, and the
  worker would pay for a River update on almost every event.
- **Best send hour**: a decayed hour-of-week profile of the customer's
  clicks and purchases in their own time zone (:class:`HourProfile`); the
  best hour is the local hour of day with the most decayed engagement.

Every model is evaluated by progressive validation: the prediction stored
with an example is scored against its label before the model learns it
(River ``ROCAUC`` and ``LogLoss``), and an ``ADWIN`` detector watches the
squared error; when it fires, a :class:`DriftDetected` is returned for the
caller to emit and show to operators.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 3, 2, 18, tzinfo=UTC)  # a Monday, 19:00 in Berlin
>>> hours = HourProfile().engaged(t, "Europe/Berlin", timedelta(days=28))
>>> hours.best_hour(), hours.best_send_time(t + timedelta(hours=2), "Europe/Berlin").isoformat()
(19, '2026-03-03T18:00:00+00:00')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from river import compose, drift, linear_model, metrics, optim, preprocessing

from agents.core.customer import CustomerState

HOURS_PER_WEEK = 168
# River's constructors carry no type hints; its estimators are used as Any.
_LOGISTIC: Any = linear_model.LogisticRegression
_SGD: Any = optim.SGD
_ROCAUC: Any = metrics.ROCAUC
_LOG_LOSS: Any = metrics.LogLoss
_ADWIN: Any = drift.ADWIN
_SCALER: Any = preprocessing.StandardScaler
_PIPELINE: Any = compose.Pipeline


@dataclass(frozen=True)
class PredictionRules:
    """Horizons of the outcome models and the decay of the hour profile."""

    purchase_horizon: timedelta = timedelta(days=30)
    churn_horizon: timedelta = timedelta(days=60)
    hour_half_life: timedelta = timedelta(days=28)
    #: A customer's examples of an outcome are opened at least this far apart.
    example_spacing: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class HourProfile:
    """Decayed engagement per local hour of the week (0 = Monday 00:00), valid at ``scored_at``.

    Order-independent like interest scores: a late event adds its weight
    decayed to ``scored_at``.
    """

    scores: Mapping[int, float] = field(default_factory=dict)
    scored_at: datetime | None = None

    def engaged(self, at: datetime, time_zone: str | None, half_life: timedelta
                ) -> HourProfile:
        """A new profile with one engagement at ``at`` (local time in ``time_zone``)."""
        local = _local(at, time_zone)
        slot = local.weekday() * 24 + local.hour
        scores = dict(self.scores)
        if self.scored_at is None or at <= self.scored_at:
            weight = 1.0 if self.scored_at is None else math.exp2(
                (at - self.scored_at) / half_life)
            scores[slot] = scores.get(slot, 0.0) + weight
            return HourProfile(scores, self.scored_at or at)
        decay = math.exp2((self.scored_at - at) / half_life)
        scores = {k: v * decay for k, v in scores.items()}
        scores[slot] = scores.get(slot, 0.0) + 1.0
        return HourProfile(scores, at)

    def best_hour(self) -> int | None:
        """Local hour of day (0-23) with the most engagement, None before any.

        Decay multiplies every score alike, so the answer does not depend on when it is asked.
        """
        by_hour = [0.0] * 24
        for slot, score in self.scores.items():
            by_hour[slot % 24] += score
        top = max(by_hour)
        return by_hour.index(top) if top > 0 else None

    def best_send_time(self, after: datetime, time_zone: str | None,
                       within: timedelta = timedelta(hours=24)) -> datetime | None:
        """The best full local hour from ``after`` on, within ``within``, in UTC.

        The hour of the week with the most engagement in that span; when none
        of them has any, the next occurrence of :meth:`best_hour`.  None
        before any engagement.
        """
        hour = self.best_hour()
        if hour is None:
            return None
        local = _local(after, time_zone)
        start = local.replace(minute=0, second=0, microsecond=0)
        if start < local:
            start += timedelta(hours=1)
        best, top = None, 0.0
        for step in range(max(1, int(within / timedelta(hours=1)))):
            candidate = start + timedelta(hours=step)
            score = self.scores.get(candidate.weekday() * 24 + candidate.hour, 0.0)
            if score > top:
                best, top = candidate, score
        if best is None:
            best = start + timedelta(hours=(hour - start.hour) % 24)
        return _utc(best)


def customer_features(state: CustomerState, at: datetime) -> dict[str, float]:
    """Recency, frequency, monetary value and recent activity of ``state`` at ``at``.

    >>> from datetime import UTC, datetime
    >>> customer_features(CustomerState("c-1"), datetime(2026, 3, 1, tzinfo=UTC))
    {'bias': 1.0, 'orders': 0.0, 'revenue': 0.0, 'clicks_7d': 0.0, 'clicks_30d': 0.0,
     'order_rate': 0.0}
    """
    figures = state.purchases
    x = {"bias": 1.0, "orders": math.log1p(figures.orders),
         "revenue": math.log1p(max(figures.revenue, 0.0)) / 5.0}
    week, month = at - timedelta(days=7), at - timedelta(days=30)
    # One pass, no lists: this runs after every event, over up to the whole history.
    clicks = clicks_30d = clicks_7d = 0
    for entry in state.history:
        if entry.kind == "click":
            t = entry.occurred_at
            if t <= at:
                clicks += 1
                if t > month:
                    clicks_30d += 1
                    if t > week:
                        clicks_7d += 1
    x["clicks_7d"] = math.log1p(clicks_7d)
    x["clicks_30d"] = math.log1p(clicks_30d)
    # Orders per engagement: how often this person's browsing ends in a purchase.
    x["order_rate"] = figures.orders / (figures.orders + clicks) if figures.orders else 0.0
    if state.last_event_at is not None:
        x["days_since_event"] = math.log1p(max((at - state.last_event_at).total_seconds(), 0)
                                           / 86400)
    if figures.last_at is not None:
        x["days_since_order"] = math.log1p(max((at - figures.last_at).total_seconds(), 0)
                                           / 86400)
    return x


@dataclass(frozen=True)
class DriftDetected:
    """A model's error changed significantly (ADWIN): emit it, show it to operators."""

    model_id: str
    at: datetime
    examples: int
    roc_auc: float
    log_loss: float
    #: ADWIN's estimate of the mean squared error after the change.
    error: float


class OutcomeModel:
    """A binary outcome model with progressive validation and drift detection.

    River's contract (:meth:`learn_one`, :meth:`predict_proba_one`);
    :meth:`observe` scores a stored prediction against its label, watches
    for drift and then learns.  Deterministic: no randomness is involved.

    >>> from datetime import UTC, datetime
    >>> model, at = OutcomeModel("purchase-30d"), datetime(2026, 3, 1, tzinfo=UTC)
    >>> for i in range(400):
    ...     x = {"bias": 1.0, "orders": float(i % 2)}
    ...     _ = model.observe(x, i % 2 == 1, model.predict_proba_one(x)[True], at)
    >>> model.quality()["roc_auc"] > 0.9
    True
    """

    def __init__(self, model_id: str, learning_rate: float = 0.01, delta: float = 0.002,
                 warmup: int = 1000) -> None:
        self.model_id = model_id
        #: Examples before drift is reported: a young model's error falls as it learns.
        self.warmup = warmup
        # Counts and days differ in scale by orders of magnitude: scale online first.
        self.model = _PIPELINE(_SCALER(), _LOGISTIC(optimizer=_SGD(learning_rate),
                                                    intercept_lr=learning_rate))
        self.roc_auc = _ROCAUC()
        self.log_loss = _LOG_LOSS()
        self.detector = _ADWIN(delta=delta)
        self.examples = 0
        self.drifts = 0
        self.last_drift: datetime | None = None

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[bool, float]:
        """Probability of the outcome for features ``x``."""
        proba: dict[bool, float] = self.model.predict_proba_one(x)
        return proba

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        """Learn one label (no evaluation)."""
        self.model.learn_one(dict(x), bool(y))

    def observe(self, x: Mapping[str, float], y: bool, predicted: float, at: datetime
                ) -> DriftDetected | None:
        """Score ``predicted`` against ``y``, watch for drift, then learn ``(x, y)``."""
        p = min(max(predicted, 1e-6), 1 - 1e-6)
        self.roc_auc.update(bool(y), {True: p, False: 1 - p})
        self.log_loss.update(bool(y), {True: p, False: 1 - p})
        self.examples += 1
        self.detector.update((float(y) - p) ** 2)
        found = None
        if self.detector.drift_detected and self.examples > self.warmup:
            self.drifts += 1
            self.last_drift = at
            found = DriftDetected(self.model_id, at, self.examples, float(self.roc_auc.get()),
                                  float(self.log_loss.get()), float(self.detector.estimation))
        self.learn_one(x, y)
        return found

    def quality(self) -> dict[str, Any]:
        """Progressive-validation figures for the status endpoint."""
        return {"model": self.model_id, "examples": self.examples,
                "roc_auc": round(float(self.roc_auc.get()), 4),
                "log_loss": round(float(self.log_loss.get()), 4), "drifts": self.drifts,
                "last_drift_at": self.last_drift.isoformat() if self.last_drift else None}


@dataclass(frozen=True)
class Example:
    """A labelled-later example: features and prediction when opened, and its deadline."""

    outcome: str  # "purchase" or "churn"
    features: Mapping[str, float]
    predicted: float
    opened_at: datetime
    deadline: datetime
    #: Labelled and learnt already; kept only to space the next example of its outcome.
    resolved: bool = False


@dataclass(frozen=True)
class Predictions:
    """What the engine predicts for one customer now."""

    purchase: float
    churn: float
    best_hour: int | None
    at: datetime


@dataclass(frozen=True)
class PredictionState:
    """Per-customer state of the predictions (kept with the customer)."""

    hours: HourProfile = HourProfile()
    open: tuple[Example, ...] = ()


class Predictors:
    """The shared outcome models."""

    def __init__(self, rules: PredictionRules | None = None) -> None:
        self.rules = rules or PredictionRules()
        self.purchase = OutcomeModel(f"purchase-{_span(self.rules.purchase_horizon)}")
        self.churn = OutcomeModel(f"churn-{_span(self.rules.churn_horizon)}")

    def model(self, outcome: str) -> OutcomeModel:
        """The model of ``outcome`` (``purchase`` or ``churn``)."""
        return self.purchase if outcome == "purchase" else self.churn

    def observe_event(self, pstate: PredictionState, state: CustomerState, kind: str,
                      at: datetime) -> tuple[PredictionState, Predictions, list[DriftDetected]]:
        """Resolve, learn and predict after one customer event of ``kind`` at ``at``.

        ``state`` is the customer state after the event; ``kind`` is
        ``click``, ``purchase`` or anything else (an event that is not
        engagement still shows the customer is alive).
        """
        drifts: list[DriftDetected] = []
        keep: list[Example] = []
        spacing = self.rules.example_spacing
        for example in pstate.open:
            spaced = at >= example.opened_at + spacing
            if example.resolved:
                if not spaced:
                    keep.append(example)
                continue
            resolved = example.opened_at < at < example.deadline and (
                example.outcome == "churn" or kind == "purchase")
            if resolved:
                # An order answers "will they buy?" with yes, any event "will they leave?" no.
                found = self.model(example.outcome).observe(
                    example.features, example.outcome == "purchase", example.predicted, at)
                drifts.extend([found] if found else [])
                if not spaced:
                    keep.append(replace(example, resolved=True))
            else:
                keep.append(example)
        hours = pstate.hours
        if kind in ("click", "purchase"):
            time_zone = state.master.time_zone if state.master else None
            hours = hours.engaged(at, time_zone, self.rules.hour_half_life)
        x = customer_features(state, at)
        p_buy = self.purchase.predict_proba_one(x)[True]
        p_churn = self.churn.predict_proba_one(x)[True]
        outcomes = {e.outcome for e in keep}
        for outcome, p, horizon in (("purchase", p_buy, self.rules.purchase_horizon),
                                    ("churn", p_churn, self.rules.churn_horizon)):
            if outcome not in outcomes:
                keep.append(Example(outcome, x, p, at, at + horizon))
        return (PredictionState(hours, tuple(keep)),
                Predictions(p_buy, p_churn, hours.best_hour(), at), drifts)

    def expire(self, pstate: PredictionState, now: datetime
               ) -> tuple[PredictionState, list[DriftDetected]]:
        """Label the examples whose horizon ended by ``now``: no purchase, churned."""
        drifts: list[DriftDetected] = []
        keep = []
        for example in pstate.open:
            if example.deadline <= now:
                if example.resolved:
                    continue
                found = self.model(example.outcome).observe(
                    example.features, example.outcome == "churn", example.predicted,
                    example.deadline)
                drifts.extend([found] if found else [])
            else:
                keep.append(example)
        if len(keep) == len(pstate.open):
            return pstate, drifts
        return PredictionState(pstate.hours, tuple(keep)), drifts

    def quality(self) -> list[dict[str, Any]]:
        """Progressive-validation figures of every model."""
        return [self.purchase.quality(), self.churn.quality()]


def _span(horizon: timedelta) -> str:
    """``30d`` or ``2h``: a horizon in a model id."""
    hours = horizon / timedelta(hours=1)
    return f"{hours / 24:g}d" if hours % 24 == 0 else f"{hours:g}h"


def _local(at: datetime, time_zone: str | None) -> datetime:
    if time_zone:
        try:
            return at.astimezone(ZoneInfo(time_zone))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return at.astimezone(ZoneInfo("UTC"))


def _utc(local: datetime) -> datetime:
    return local.astimezone(ZoneInfo("UTC"))
