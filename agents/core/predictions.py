"""Per-customer predictions: purchase probability, churn risk, best send hour.

Updated event by event from the customer's own events:

- **Purchase probability**: the chance of an order within ``purchase_horizon``
  of a given time; **churn risk**: the chance of no event at all within
  ``churn_horizon``.  Each is one River ``LogisticRegression`` shared by all
  customers (:class:`OutcomeModel`) over :func:`features` (recency,
  frequency, tenure, inter-purchase regularity, monetary value, items per
  order, recent clicks), and is answered *as of a time* from the customer's
  :class:`Summary` and the current model (:meth:`Predictors.predict`), not
  read back from the customer's last event.  Labels come late: examples are
  opened on a schedule in event time, every ``example_interval`` per
  customer at a phase of their own, while the customer was seen within
  ``active_span``, so recency varies across examples as it does when the
  models are asked.  An order (purchase) or any event (churn) within the
  horizon marks an example; every example is learnt when its horizon has
  passed on the event-time clock, positive or negative alike, in deadline
  order, so early positives do not swamp the model.
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

import hashlib
import math
from collections.abc import Iterable, Mapping
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
    #: Examples are opened per customer this far apart in event time (staggered).
    example_interval: timedelta = timedelta(days=7)
    #: A customer not seen for this long gets no more examples until they return.
    active_span: timedelta = timedelta(days=365)
    #: Step size of the outcome models' SGD (and their intercepts).
    learning_rate: float = 0.001


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


@dataclass(frozen=True)
class Summary:
    """What the outcome models need of a customer, valid as of any later time.

    Kept in memory per active customer so that an example can be opened on
    its schedule (or a prediction answered) without the customer's state.

    >>> from datetime import UTC, datetime
    >>> Summary.of(CustomerState("c-1"), 0).orders
    0
    """

    orders: int = 0
    revenue: float = 0.0
    #: Items bought over all orders (quantities).
    units: int = 0
    first_order: datetime | None = None
    last_order: datetime | None = None
    last_event_at: datetime | None = None
    clicks: int = 0
    #: Times of the clicks of the last 30 days before the customer's latest event.
    recent_clicks: tuple[datetime, ...] = ()

    @classmethod
    def of(cls, state: CustomerState, units: int) -> Summary:
        """The summary of ``state`` with ``units`` items bought in all."""
        figures = state.purchases
        clicks, recent = 0, []
        since = (state.last_event_at - timedelta(days=30)
                 if state.last_event_at is not None else None)
        # One pass, no copies: this runs after every event, over up to the whole history.
        for entry in state.history:
            if entry.kind == "click":
                clicks += 1
                if since is not None and entry.occurred_at > since:
                    recent.append(entry.occurred_at)
        return cls(figures.orders, figures.revenue, units, figures.first_at, figures.last_at,
                   state.last_event_at, clicks, tuple(recent))


def features(summary: Summary, at: datetime) -> dict[str, float]:
    """The outcome models' features of ``summary`` as of ``at``.

    Recency (days since the last order, or the last event before any),
    frequency, tenure (days since the first order), inter-purchase
    regularity (the mean gap between orders, and the recency as a multiple
    of it: how overdue the next order is), monetary value and items per
    order, days since any event and recent clicks.  Every feature is always
    present (zero when it does not apply), so the online scaler sees its
    true spread.

    >>> from datetime import UTC, datetime
    >>> at = datetime(1997, 1, 1, tzinfo=UTC)
    >>> s = Summary(2, 30.0, 3, at, at + timedelta(days=10), at + timedelta(days=10))
    >>> x = features(s, at + timedelta(days=30))
    >>> round(x["recency"], 3), round(x["overdue"], 3), x["repeat"]
    (3.045, 1.099, 1.0)
    """
    orders = summary.orders
    recency = tenure = gap = overdue = 0.0
    # Inlined arithmetic: this runs after every event and for every example opened.
    last_order, first_order = summary.last_order, summary.first_order
    if last_order is not None and first_order is not None:
        recency = max((at - last_order).total_seconds(), 0.0) / 86400
        tenure = max((at - first_order).total_seconds(), 0.0) / 86400
        if orders > 1:
            gap = max((last_order - first_order).total_seconds(), 0.0) / 86400 / (orders - 1)
            overdue = math.log1p(recency / max(gap, 1.0))
    elif summary.last_event_at is not None:
        recency = max((at - summary.last_event_at).total_seconds(), 0.0) / 86400
    clicks_7d = clicks_30d = 0
    if summary.recent_clicks:
        week, month = at - timedelta(days=7), at - timedelta(days=30)
        for t in summary.recent_clicks:
            if month < t <= at:
                clicks_30d += 1
                if t > week:
                    clicks_7d += 1
    since_event = (max((at - summary.last_event_at).total_seconds(), 0.0) / 86400
                   if summary.last_event_at is not None else 0.0)
    return {
        "bias": 1.0,
        "recency": math.log1p(recency),
        "orders": math.log1p(orders),
        "tenure": math.log1p(tenure),
        "gap": math.log1p(gap),
        "overdue": overdue,
        "repeat": 1.0 if orders > 1 else 0.0,
        "monetary": math.log1p(max(summary.revenue, 0.0) / orders) if orders else 0.0,
        "units": math.log1p(summary.units / orders) if orders else 0.0,
        "days_since_event": math.log1p(since_event),
        "clicks_7d": math.log1p(clicks_7d),
        "clicks_30d": math.log1p(clicks_30d),
        # Orders per engagement: how often this person's browsing ends in a purchase.
        "order_rate": orders / (orders + summary.clicks) if orders else 0.0,
    }


def customer_features(state: CustomerState, at: datetime, units: int = 0) -> dict[str, float]:
    """:func:`features` of ``state`` as of ``at``.

    >>> from datetime import UTC, datetime
    >>> x = customer_features(CustomerState("c-1"), datetime(2026, 3, 1, tzinfo=UTC))
    >>> sorted(k for k, v in x.items() if v)
    ['bias']
    """
    return features(Summary.of(state, units), at)


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
    """A labelled-later example: features and prediction when opened, and its deadline.

    ``hit`` turns true when an order (purchase) or any event (churn) falls
    within the horizon; the label is learnt only when the deadline has
    passed, positive or negative alike, so that early positives do not
    swamp the model.
    """

    outcome: str  # "purchase" or "churn"
    features: Mapping[str, float]
    predicted: float
    opened_at: datetime
    deadline: datetime
    hit: bool = False

    @property
    def label(self) -> bool:
        """The label once the deadline has passed: bought; churned (no event at all)."""
        return self.hit if self.outcome == "purchase" else not self.hit


@dataclass(frozen=True)
class Predictions:
    """What the engine predicts for one customer at ``at``."""

    purchase: float
    churn: float
    best_hour: int | None
    at: datetime


@dataclass(frozen=True)
class PredictionState:
    """Per-customer state of the predictions.

    ``summary`` is the customer as of their latest event; ``next_at`` the
    next time on their example schedule.
    """

    hours: HourProfile = HourProfile()
    open: tuple[Example, ...] = ()
    summary: Summary | None = None
    next_at: datetime | None = None

    def due(self) -> datetime | None:
        """The earliest time at which :meth:`Predictors.expire` has work for this customer."""
        times = [e.deadline for e in self.open]
        if self.next_at is not None:
            times.append(self.next_at)
        return min(times) if times else None


#: Example schedules count from here (a Monday); each customer is offset by a phase.
EPOCH = datetime(1970, 1, 5, tzinfo=ZoneInfo("UTC"))


def phase(customer_id: str, interval: timedelta) -> timedelta:
    """A customer's fixed offset within ``interval``: schedules are staggered, not in step.

    >>> phase("c-1", timedelta(days=7)) == phase("c-1", timedelta(days=7))
    True
    """
    steps = max(int(interval / timedelta(minutes=1)), 1)
    # A keyed hash spreads similar ids (CRC-32 of numeric ids clusters).
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return timedelta(minutes=int.from_bytes(digest, "big") % steps)


def next_point(customer_id: str, after: datetime, interval: timedelta) -> datetime:
    """The first time of the customer's schedule strictly after ``after``.

    >>> from datetime import UTC
    >>> at = datetime(2026, 3, 2, tzinfo=UTC)
    >>> t = next_point("c-1", at, timedelta(days=7))
    >>> at < t <= at + timedelta(days=7), next_point("c-1", t, timedelta(days=7)) - t
    (True, datetime.timedelta(days=7))
    """
    start = EPOCH + phase(customer_id, interval)
    steps = (after - start) // interval + 1
    return start + steps * interval


class Predictors:
    """The shared outcome models and the late labels that feed them.

    Examples are opened on a schedule in event time: for each customer every
    ``example_interval`` (at a phase of their own), while the customer was
    seen within ``active_span``, with the features as of that moment, so
    that recency and tenure vary across examples as they do when the models
    are asked.  Events mark the open examples they answer; an example is
    learnt when its horizon has passed on the event-time clock.
    """

    def __init__(self, rules: PredictionRules | None = None) -> None:
        self.rules = rules or PredictionRules()
        rate = self.rules.learning_rate
        self.purchase = OutcomeModel(f"purchase-{_span(self.rules.purchase_horizon)}", rate)
        self.churn = OutcomeModel(f"churn-{_span(self.rules.churn_horizon)}", rate)

    def model(self, outcome: str) -> OutcomeModel:
        """The model of ``outcome`` (``purchase`` or ``churn``)."""
        return self.purchase if outcome == "purchase" else self.churn

    def predict(self, summary: Summary, at: datetime) -> tuple[float, float]:
        """Purchase probability and churn risk of ``summary`` as of ``at``."""
        x = features(summary, at)
        return self.purchase.predict_proba_one(x)[True], self.churn.predict_proba_one(x)[True]

    def observe_event(self, pstate: PredictionState, state: CustomerState, kind: str,
                      at: datetime, units: int = 0
                      ) -> tuple[PredictionState, Predictions, list[DriftDetected]]:
        """Mark, open and predict after one customer event of ``kind`` at ``at``.

        ``state`` is the customer state after the event; ``kind`` is
        ``click``, ``purchase`` or anything else (an event that is not
        engagement still shows the customer is alive); ``units`` is the
        number of items the customer has bought in all, this event included.
        """
        cid = state.customer_id
        # The schedule points up to this event are answered by the state before it.
        opened = self._opened(cid, pstate, at, inclusive=False)
        marked = opened.open
        if marked and any(not e.hit and e.opened_at < at <= e.deadline for e in marked):
            marked = tuple(
                replace(e, hit=True) if (not e.hit and e.opened_at < at <= e.deadline
                                         and (e.outcome == "churn" or kind == "purchase"))
                else e for e in marked)
        hours = pstate.hours
        if kind in ("click", "purchase"):
            time_zone = state.master.time_zone if state.master else None
            hours = hours.engaged(at, time_zone, self.rules.hour_half_life)
        summary = Summary.of(state, units)
        next_at = opened.next_at
        if next_at is None or next_at <= at:
            next_at = next_point(cid, at, self.rules.example_interval)
        p_buy, p_churn = self.predict(summary, at)
        return (PredictionState(hours, marked, summary, next_at),
                Predictions(p_buy, p_churn, hours.best_hour(), at), [])

    def _opened(self, cid: str, pstate: PredictionState, until: datetime, inclusive: bool
                ) -> PredictionState:
        """``pstate`` with the examples of its schedule up to ``until`` opened."""
        summary, next_at = pstate.summary, pstate.next_at
        if summary is None or next_at is None or summary.last_event_at is None:
            return pstate
        rules = self.rules
        quiet_from = summary.last_event_at + rules.active_span
        added: list[Example] = []
        while (next_at < until or (inclusive and next_at == until)):
            if next_at > quiet_from:  # gone quiet: no more examples until they return
                next_at = None
                break
            x = features(summary, next_at)
            added.append(Example("purchase", x, self.purchase.predict_proba_one(x)[True],
                                 next_at, next_at + rules.purchase_horizon))
            added.append(Example("churn", x, self.churn.predict_proba_one(x)[True],
                                 next_at, next_at + rules.churn_horizon))
            next_at += rules.example_interval
        if not added and next_at == pstate.next_at:
            return pstate
        return PredictionState(pstate.hours, (*pstate.open, *added), summary, next_at)

    def due(self, pstate: PredictionState, now: datetime, customer_id: str = ""
            ) -> tuple[PredictionState, list[Example]]:
        """Open the examples scheduled up to ``now``; take out those whose horizon ended."""
        opened = self._opened(customer_id, pstate, now, inclusive=True)
        ended = [e for e in opened.open if e.deadline <= now]
        if opened is pstate and not ended:
            return pstate, ended
        keep = tuple(e for e in opened.open if e.deadline > now)
        return PredictionState(opened.hours, keep, opened.summary, opened.next_at), ended

    def learn(self, examples: Iterable[Example]) -> list[DriftDetected]:
        """Score and learn each example's label, in the order given (by deadline)."""
        drifts: list[DriftDetected] = []
        for example in examples:
            found = self.model(example.outcome).observe(
                example.features, example.label, example.predicted, example.deadline)
            drifts.extend([found] if found else [])
        return drifts

    def expire(self, pstate: PredictionState, now: datetime, customer_id: str = ""
               ) -> tuple[PredictionState, list[DriftDetected]]:
        """:meth:`due`, then :meth:`learn` the examples whose horizon ended by ``now``."""
        rest, ended = self.due(pstate, now, customer_id)
        ended.sort(key=lambda e: (e.deadline, e.outcome))
        return rest, self.learn(ended)

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
