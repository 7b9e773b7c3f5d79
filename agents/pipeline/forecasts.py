"""The worker's per-customer predictions: purchase probability, churn risk, best send hour.

:class:`Forecaster` wraps the shared outcome models of
:mod:`agents.core.predictions` with what needs the shell:

- **Event by event.** After each consented event the customer's stage calls
  :meth:`Forecaster.observe`; the customer's hour profile, item count and
  the predictions as of that event are written into the state
  (:class:`~agents.core.customer.CustomerPredictions`) and stored with it.
  What is served (the API, the export, the campaign rules, ``relevanz
  evaluate``) is answered as of the time asked by :meth:`Forecaster.predict_at`
  from the stored state and the current models.  Customers without consent
  to profiling get none, and a profiling revocation removes them.
- **Late labels on event time.** Per active customer the forecaster keeps a
  small summary, the next time on the customer's example schedule and the
  open examples (in memory, like the content policy's open decisions).
  :meth:`Forecaster.expire`, driven by the worker's event-time watermark,
  opens the examples whose time has come and learns those whose horizon
  ended, across customers in deadline order (a heap of due times, never a
  scan of all customers).  At most :attr:`Forecaster.max_open` customers are
  tracked: beyond that the least recently seen are dropped unlabelled and
  counted, so memory stays bounded however many customers there are.
- **Quality and drift.** Progressive validation (ROC AUC, log loss) and an
  ADWIN detector per model; a drift comes back from :meth:`observe` /
  :meth:`expire` for the worker to emit on ``model-drift`` and show on
  ``/v1/status``.
- **Snapshots.** The two models are saved with the content policy (same
  interval, same store table, model ids ``purchase-30d`` and ``churn-60d``)
  and loaded on start.  With several workers the newest save wins: each
  worker trains on its own customers, and the outcome models (a scaler and a
  logistic regression) are not merged; a restarted worker resumes from the
  newest.  A restart loses the labels of examples still open.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from agents.core import snapshots
from agents.core.customer import CustomerPredictions, CustomerState
from agents.core.predictions import (
    DriftDetected,
    Example,
    HourProfile,
    PredictionRules,
    PredictionState,
    Predictors,
    Summary,
    features,
)
from agents.core.snapshots import SnapshotInvalid
from schemas.records import Clicked, Purchased, Record
from streams.store import Store

log = structlog.get_logger(__name__)

KIND = "outcome-model"
_NO_HOURS = HourProfile()


class Forecaster:
    """Per-customer predictions from the shared outcome models, with their late labels."""

    def __init__(self, rules: PredictionRules | None = None, max_open: int = 200_000,
                 learn: bool = True) -> None:
        self.predictors = Predictors(rules)
        self.max_open = max_open
        #: False: labels are resolved but not learnt, so the models stay as they are (a
        #: frozen scorer: predictions then depend on each customer's own events only).
        self.learn = learn
        #: Customer id -> summary, schedule and open examples, least recently touched first.
        self._open: OrderedDict[str, PredictionState] = OrderedDict()
        #: (time, customer id): when a customer's schedule or an example's horizon is due.
        self._deadlines: list[tuple[datetime, str]] = []
        self.dropped = 0
        self.predicted = 0
        self.drifts: list[DriftDetected] = []
        self._versions: dict[str, int] = {}

    def observe(self, state: CustomerState, kind: str, at: datetime, units: int = 0
                ) -> tuple[CustomerState, list[DriftDetected]]:
        """``state`` with its predictions after an event of ``kind`` at ``at``.

        ``kind`` is ``click``, ``purchase`` or anything else; ``units`` the
        items this event bought; ``state`` is the state after the event, and
        profiling must be allowed (the caller checks).
        """
        cid = state.customer_id
        stored = state.predictions
        total_units = (stored.units if stored is not None else 0) + units
        # Hour profiles are never changed in place (a new engagement makes a new one), so
        # the stored scores are shared, not copied, when no engagement changes them.
        hours = (HourProfile(stored.hours, stored.hours_at) if stored is not None
                 else HourProfile())
        known = self._open.pop(cid, None)
        before = (PredictionState(hours, known.open, known.summary, known.next_at)
                  if known is not None else PredictionState(hours))
        # The hour profile is kept in UTC hours of the week, so it does not depend on
        # whether a time-zone change arrived before or after a click (topics interleave
        # differently in replay); the best hour is made local when it is read.
        in_utc = CustomerState.__new__(CustomerState)
        in_utc.__dict__.update(state.__dict__)
        in_utc.master = None
        after, now, drifts = self.predictors.observe_event(before, in_utc, kind, at,
                                                           total_units)
        # The hour profile lives in the customer state: the forecaster keeps the rest.
        self._keep(cid, PredictionState(_NO_HOURS, after.open, after.summary, after.next_at),
                   known)
        self.predicted += 1
        self._noted(drifts)
        new = CustomerState.__new__(CustomerState)
        new.__dict__.update(state.__dict__)
        new.predictions = CustomerPredictions(
            purchase=now.purchase, churn=now.churn,
            best_hour=local_hour(now.best_hour, at,
                                 state.master.time_zone if state.master else None),
            # The newest event time seen, whatever order the topics interleaved in.
            at=at if stored is None else max(stored.at, at),
            hours=_scores(after.hours), hours_at=after.hours.scored_at, units=total_units)
        return new, drifts

    def predict_at(self, state: CustomerState, at: datetime) -> tuple[float, float] | None:
        """Purchase probability and churn risk of ``state`` as of ``at`` with the current
        models (None without predictions: no consent to profiling)."""
        stored = state.predictions
        if stored is None:
            return None
        return self.predictors.predict(Summary.of(state, stored.units), at)

    def churn_at(self, state: CustomerState, at: datetime) -> float | None:
        """Churn risk of ``state`` as of ``at`` (None without predictions)."""
        stored = state.predictions
        if stored is None:
            return None
        x = features(Summary.of(state, stored.units), at)
        churn: float = self.predictors.churn.predict_proba_one(x)[True]
        return churn

    def expire(self, watermark: datetime | None) -> list[DriftDetected]:
        """Open the examples scheduled up to ``watermark``; learn those whose horizon ended."""
        if watermark is None:
            return []
        ended: list[tuple[datetime, str, str, Example]] = []
        while self._deadlines and self._deadlines[0][0] <= watermark:
            due, cid = heapq.heappop(self._deadlines)
            pstate = self._open.get(cid)
            if pstate is None or pstate.due() != due:
                continue  # stale: the customer's schedule moved, or they were dropped
            rest, found = self.predictors.due(pstate, watermark, cid)
            ended.extend((e.deadline, cid, e.outcome, e) for e in found)
            self._keep(cid, rest, None, touch=False)
        # Learnt in deadline order across customers, whatever the batch's span: an online
        # model weighs its latest examples most, which must not be one customer's run.
        ended.sort(key=lambda e: e[:3])
        if not self.learn:
            return []
        drifts = self.predictors.learn(e[3] for e in ended)
        self._noted(drifts)
        return drifts

    def forget(self, customer_id: str) -> None:
        """Drop the customer's open examples unlabelled (erasure or no more profiling)."""
        self._open.pop(customer_id, None)

    def _keep(self, cid: str, pstate: PredictionState, known: PredictionState | None,
              touch: bool = True) -> None:
        due = pstate.due()
        if due is None:
            self._open.pop(cid, None)
            return
        self._open[cid] = pstate
        if not touch:
            pass
        elif known is None or known.due() != due:
            self._open.move_to_end(cid)
        if known is None or known.due() != due:
            heapq.heappush(self._deadlines, (due, cid))
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
            self.dropped += 1
        # Entries of dropped customers or of moved schedules stay in the heap until they
        # pass (expire skips them); once they outnumber the live ones, keep only the live
        # ones (amortised O(1) per push).
        if len(self._deadlines) > 2 * len(self._open) + 1024:
            self._deadlines = [(d, c) for d, c in self._deadlines
                               if (p := self._open.get(c)) is not None and p.due() == d]
            heapq.heapify(self._deadlines)

    def _noted(self, drifts: list[DriftDetected]) -> None:
        for drift in drifts:
            self.drifts = [*self.drifts[-9:], drift]
            log.warning("model_drift", model=drift.model_id, at=drift.at.isoformat(),
                        examples=drift.examples, error=round(drift.error, 5))

    @property
    def open_examples(self) -> int:
        """Examples waiting for their label."""
        return sum(len(v.open) for v in self._open.values())

    def quality(self) -> list[dict[str, Any]]:
        """Progressive-validation figures of each outcome model, for operators."""
        return [{**q, "open_examples": sum(1 for v in self._open.values() for e in v.open
                                           if e.outcome == outcome),
                 "dropped_unlabelled": self.dropped}
                for outcome, q in zip(("purchase", "churn"), self.predictors.quality(),
                                      strict=True)]

    # -- snapshots ---------------------------------------------------------------------

    def _models(self) -> list[Any]:
        return [self.predictors.purchase, self.predictors.churn]

    async def load(self, store: Store, quiet: bool = False) -> bool:
        """Resume each outcome model from its newest snapshot (fresh when there is none);
        True when both were resumed.  ``quiet``: no log line per model resumed."""
        resumed = 0
        for index, model in enumerate(self._models()):
            snapshot = await store.latest_snapshot(model.model_id)
            if snapshot is None:
                continue
            self._versions[model.model_id] = snapshot.version
            try:
                loaded = snapshots.decode(snapshot.blob, snapshot.checksum, KIND).model
            except (SnapshotInvalid, TypeError) as exc:
                log.warning("model_snapshot_unreadable", model=model.model_id,
                            version=snapshot.version, error=str(exc))
                continue
            if index == 0:
                self.predictors.purchase = loaded
            else:
                self.predictors.churn = loaded
            if not quiet:
                log.info("model_resumed", model=model.model_id, version=snapshot.version)
            resumed += 1
        return resumed == 2

    async def save(self, store: Store, now: datetime) -> dict[str, int]:
        """Store each outcome model as its next version; returns model id -> version."""
        saved = {}
        for model in self._models():
            latest = await store.latest_snapshot(model.model_id)
            version = max(latest.version if latest else 0,
                          self._versions.get(model.model_id, 0)) + 1
            blob, checksum = snapshots.encode(model.model_id, version, KIND, model, now)
            await store.put_snapshot(model.model_id, version, blob, checksum, now)
            self._versions[model.model_id] = saved[model.model_id] = version
        return saved


def _scores(hours: HourProfile) -> dict[int, float]:
    """The profile's scores as a dict, the profile's own when it is one (read-only)."""
    return hours.scores if isinstance(hours.scores, dict) else dict(hours.scores)


def local_hour(utc_hour: int | None, on: datetime, time_zone: str | None) -> int | None:
    """The local hour of day in ``time_zone`` of ``utc_hour`` o'clock UTC on the day of ``on``.

    >>> from datetime import UTC
    >>> winter, summer = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 7, 2, tzinfo=UTC)
    >>> local_hour(18, winter, "Europe/Berlin"), local_hour(18, summer, "Europe/Berlin")
    (19, 20)
    >>> local_hour(None, winter, None)
    """
    if utc_hour is None:
        return None
    return _local_hour_on(utc_hour, on.astimezone(UTC).date(), time_zone)


@lru_cache(maxsize=1 << 14)
def _local_hour_on(utc_hour: int, day: date, time_zone: str | None) -> int:
    # Asked after every event; customers share a handful of zones, hours and days.
    moment = datetime.combine(day, time(utc_hour), UTC)
    try:
        zone = ZoneInfo(time_zone) if time_zone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    return moment.astimezone(zone).hour


def units_of(record: Record) -> int:
    """Items a purchase bought (0 for any other event)."""
    if isinstance(record, Purchased):
        return sum(max(item.quantity, 0) for item in record.items)
    return 0


def kind_of(record: Record) -> str:
    """``click``, ``purchase`` or ``other``: what :meth:`Forecaster.observe` needs of an event."""
    if isinstance(record, Clicked):
        return "click"
    return "purchase" if isinstance(record, Purchased) else "other"
