"""``relevanz evaluate``: how well the served predictions rank real customers.

A transaction log (CSV ``customer_id,occurred_at,amount,quantity``, ISO 8601
times with an offset) is split at ``cutoff``: the purchases before it are
replayed through the worker's customer stage (the engine's real processing
with the embedded store), each customer granting consent to profiling at
their first purchase, in event-time order; the purchases in the
``holdout_weeks`` after it are the answers.  The predictions are read from
the stored customer states as of the cutoff and scored:

- ``purchase_auc``: ROC AUC of the purchase probability for "buys in the
  holdout", with a bootstrap 95% interval (``purchase_auc_ci``);
- ``purchase_expected`` / ``purchase_actual``: the sum of the purchase
  probabilities against the customers who buy within the model's horizon
  after the cutoff (calibration);
- ``churn_auc``: the same AUC for one minus the churn risk, and
  ``churn_expected`` / ``churn_actual`` against the customers with no
  purchase within the churn horizon;
- baselines computed in the same run from the same calibration purchases
  (:mod:`streams.sim.baselines`): ``recency_auc``, ``rfm_auc``, ``bgnbd_auc``;
- ``purchase_weights`` / ``churn_weights``: what each outcome model learnt,
  per feature, in the online scaler's standard units.

Nothing reads the wall clock: the stage is given the event time as its "now".
"""

from __future__ import annotations

import asyncio
import csv
import math
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agents.core.customer import CustomerState
from agents.core.watermarks import LowWatermark
from schemas.records import ConsentChanged, Purchased, PurchasedItem, Record
from streams.errors import ConfigError, InvalidTransactions
from streams.settings import Settings
from streams.sim import baselines
from streams.sim.transactions import HEADER, Transaction, read_transactions
from streams.store import BatchWrite, EventKey

BATCH = 2000


def customer_events(transactions: Iterable[Transaction], order: str = "time",
                    seed: int = 7) -> list[Record]:
    """Consent at each customer's first purchase, then every purchase, in event-time order
    (``order="time"``), or every consent first (``"consents-first"``, as when the consents
    topic is read before the purchases), or the two topics, each in event-time order,
    interleaved at random (``"random"``, seeded by ``seed``: every interleaving equally
    likely, as when a consumer reads the topics at uneven paces).

    >>> from datetime import UTC
    >>> t = datetime(1997, 1, 1, tzinfo=UTC)
    >>> [type(r).__name__ for r in customer_events([Transaction("7", t, 5.0, 1)])]
    ['ConsentChanged', 'Purchased']
    """
    first: dict[str, datetime] = {}
    purchases: list[tuple[datetime, int, str, Record]] = []
    for n, t in enumerate(transactions):
        first[t.customer_id] = min(first.get(t.customer_id, t.occurred_at), t.occurred_at)
        quantity = max(t.quantity, 1)
        purchases.append((t.occurred_at, 1, t.customer_id, Purchased(
            event_id=f"{t.customer_id}-p{n}", customer_id=t.customer_id,
            occurred_at=t.occurred_at, schema_version=1, order_id=f"{t.customer_id}-o{n}",
            items=[PurchasedItem(product_id="item", quantity=quantity,
                                 unit_price=t.amount / quantity)],
            total=t.amount, currency="USD")))
    consents = [(at, 0, cid, ConsentChanged(
        event_id=f"{cid}-consent", customer_id=cid, occurred_at=at, schema_version=1,
        action="granted", purposes=["profiling"], source="relevanz-evaluate"))
        for cid, at in first.items()]
    if order == "consents-first":
        return [r for *_, r in [*sorted(consents, key=lambda e: e[:3]),
                                *sorted(purchases, key=lambda e: e[:3])]]
    if order == "random":
        return interleave([[r for *_, r in sorted(consents, key=lambda e: e[:3])],
                           [r for *_, r in sorted(purchases, key=lambda e: e[:3])]],
                          random.Random(seed))
    return [r for *_, r in sorted([*consents, *purchases], key=lambda e: e[:3])]


def interleave(streams: Sequence[Sequence[Record]], rng: random.Random) -> list[Record]:
    """The ``streams`` merged in a uniformly random interleaving that keeps each one's order.

    >>> interleave([[1, 2, 3], ["a", "b"]], random.Random(1))  # type: ignore[list-item]
    [1, 2, 'a', 3, 'b']
    """
    left = [len(s) for s in streams]
    taken = [0] * len(streams)
    merged: list[Record] = []
    total = sum(left)
    while total:
        # The next item comes from a stream with probability proportional to what it has left.
        pick = rng.randrange(total)
        n = 0
        while pick >= left[n]:
            pick -= left[n]
            n += 1
        merged.append(streams[n][taken[n]])
        taken[n] += 1
        left[n] -= 1
        total -= 1
    return merged


@dataclass(frozen=True)
class Served:
    """A customer's predictions as read at the cutoff."""

    purchase: float
    churn: float


async def replay_in_process(settings: Settings, records: Sequence[Record], cutoff: datetime,
                            progress: Callable[[str], None], sizes: Sequence[int] = (BATCH,)
                            ) -> tuple[dict[str, Served], Any]:
    """Apply ``records`` through the customer stage in batches of ``sizes`` (taken in
    turn); the predictions as of ``cutoff``.

    The stage's clock is the low watermark over the two topics as the worker keeps it
    (:mod:`agents.core.watermarks`): each topic is one partition, read in the order
    ``records`` has, with what is left of it after each batch as its end offset.
    Returns the served predictions by customer and the forecaster (for its weights).
    """
    from agents.pipeline.customer_cache import CustomerCache
    from streams.app import build_worker
    from streams.store.embedded import EmbeddedStore

    with tempfile.TemporaryDirectory(prefix="relevanz-evaluate-") as tmp:
        path = Path(tmp) / "store.db"
        run = settings.with_(store_url=f"embedded:{path}")
        store = EmbeddedStore(path)
        await store.open()
        try:
            worker = build_worker(run, store=store, emit=False)
            stage = worker.stage
            assert stage is not None  # build_worker always wires the customer stage
            await _apply_all(stage, records, sizes, progress)
            ids = sorted({r.customer_id for r in records})
            states = await CustomerCache(store, len(ids) + 1).get_many(ids, cutoff)
            forecaster = stage.forecaster
            served = {cid: served_at(forecaster, states[cid], cutoff) for cid in ids}
        finally:
            await store.close()
    return served, forecaster


async def _apply_all(stage: Any, records: Sequence[Record], sizes: Sequence[int],
                     progress: Callable[[str], None]) -> None:
    """Apply ``records`` in batches, moving the stage's low watermark as the worker does."""
    watermark = stage.progress = LowWatermark()
    ends: dict[Hashable, int | None] = dict(Counter(_topic_of(r) for r in records))
    read: Counter[str] = Counter()
    started, last_report, start, turn = time.monotonic(), 0.0, 0, 0
    while start < len(records):
        batch = records[start:start + max(sizes[turn % len(sizes)], 1)]
        start, turn = start + len(batch), turn + 1
        for record in batch:
            topic = _topic_of(record)
            watermark.read(topic, read[topic], record.occurred_at)
            read[topic] += 1
        watermark.settle(ends)
        now = max(r.occurred_at for r in batch)
        _, failed = await stage.apply(batch, now)
        if failed:
            raise InvalidTransactions(f"the engine could not apply an event: "
                                      f"{next(iter(failed.values()))}")
        keys: list[EventKey] = [(r.customer_id, r.event_id) for r in batch]
        await stage.commit(BatchWrite(events=keys), now)
        if time.monotonic() - last_report >= 2.0:
            last_report = time.monotonic()
            progress(f"replayed {start}/{len(records)} events "
                     f"({last_report - started:.0f}s, event time {now.date()})")


def _topic_of(record: Record) -> str:
    """The topic an evaluation's record is read from (one partition each)."""
    return "consents" if isinstance(record, ConsentChanged) else "purchases"


def served_at(forecaster: Any, state: CustomerState, at: datetime) -> Served:
    """What the engine serves for ``state`` as of ``at``."""
    now = forecaster.predict_at(state, at)
    if now is None:
        return Served(math.nan, math.nan)
    return Served(*now)


def evaluate(path: Path, cutoff: datetime, holdout_weeks: int, settings: Settings,
             progress: Callable[[str], None], seed: int = 7, order: str = "time",
             through_worker: bool = False, limit: int | None = None) -> dict[str, Any]:
    """Replay the calibration purchases of ``path``, score the predictions on the holdout.

    ``through_worker``: through the embedded broker, a worker and the API
    (:mod:`streams.sim.through_worker`) instead of the customer stage in
    process; ``limit``: only the first ``limit`` customers (by id) of the log.
    """
    started = time.monotonic()
    calibration, later = _split(path, cutoff, holdout_weeks, limit)
    customers = sorted({t.customer_id for t in calibration})
    if through_worker and order != "time":
        raise ConfigError("--through-worker publishes in event-time order: use --order time")
    records = customer_events(calibration, order, seed)
    progress(f"{len(customers)} customers, {len(calibration)} purchases before the cutoff, "
             f"{len(later)} in the {holdout_weeks}-week holdout")
    if through_worker:
        from streams.sim.through_worker import replay_through_worker

        read, forecaster = asyncio.run(replay_through_worker(
            settings, records, customers, cutoff, progress))
        served = {cid: Served(*read[cid]) for cid in customers}
    else:
        served, forecaster = asyncio.run(replay_in_process(settings, records, cutoff,
                                                           progress))
    rules = forecaster.predictors.rules
    bought = {t.customer_id for t in later}
    within = {t.customer_id for t in later
              if t.occurred_at < cutoff + rules.purchase_horizon}
    quiet = {t.customer_id for t in later if t.occurred_at < cutoff + rules.churn_horizon}
    labels = [c in bought for c in customers]
    p_buy = [served[c].purchase for c in customers]
    p_churn = [served[c].churn for c in customers]
    progress("fitting the baselines")
    base = baselines.scores(calibration, customers, cutoff, holdout_weeks)
    rng = random.Random(seed)
    result: dict[str, Any] = {
        "customers": len(customers),
        "order": order,
        "through_worker": through_worker,
        "buyers": sum(labels),
        "purchase_auc": _r(roc_auc(labels, p_buy)),
        "purchase_auc_ci": [_r(v) for v in bootstrap_auc(labels, p_buy, rng)],
        "purchase_expected": _r(sum(p_buy), 1),
        "purchase_actual": len(within),
        "purchase_horizon_days": rules.purchase_horizon.days,
        "churn_auc": _r(roc_auc(labels, [1 - p for p in p_churn])),
        "churn_auc_ci": [_r(v) for v in bootstrap_auc(labels, [1 - p for p in p_churn], rng)],
        "churn_expected": _r(sum(p_churn), 1),
        "churn_actual": len(customers) - len(quiet),
        "churn_horizon_days": rules.churn_horizon.days,
    }
    for name, score in base.items():  # BG/NBD may not converge: no figure then
        result[f"{name}_auc"] = None if all(map(math.isnan, score)) else _r(roc_auc(labels, score))
    result["bgnbd_library"] = baselines.BGNBD_LIBRARY
    for outcome in ("purchase", "churn"):
        result[f"{outcome}_weights"] = _learnt_weights(forecaster, outcome)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def _split(path: Path, cutoff: datetime, holdout_weeks: int, limit: int | None
           ) -> tuple[list[Transaction], list[Transaction]]:
    """The log's purchases before the cutoff and those in the holdout (of the first
    ``limit`` customers by id, when given)."""
    transactions = read_transactions(path)
    if limit is not None:
        kept = set(sorted({t.customer_id for t in transactions})[:limit])
        transactions = [t for t in transactions if t.customer_id in kept]
    end = cutoff + timedelta(weeks=holdout_weeks)
    calibration = [t for t in transactions if t.occurred_at < cutoff]
    if not calibration:
        raise InvalidTransactions(f"{path}: no purchase before the cutoff {cutoff.isoformat()}")
    return calibration, [t for t in transactions if cutoff <= t.occurred_at < end]


def _learnt_weights(forecaster: Any, outcome: str) -> dict[str, float]:
    """What the model learnt: weight per feature, on the online scaler's standard units."""
    weights = forecaster.predictors.model(outcome).model["LogisticRegression"].weights
    return {k: round(float(v), 3) for k, v in weights.items() if k != "bias"}


def _r(value: float, digits: int = 4) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """ROC AUC of ``scores`` for ``labels`` (ties count a half; NaN scores rank lowest).

    >>> roc_auc([True, False, True, False], [0.9, 0.1, 0.5, 0.5])
    0.875
    """
    pairs = sorted(zip((-math.inf if math.isnan(s) else s for s in scores), labels,
                       strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return math.nan
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # average 1-based rank of the tie group
        rank_sum += mid * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def bootstrap_auc(labels: Sequence[bool], scores: Sequence[float], rng: random.Random,
                  rounds: int = 200) -> tuple[float, float]:
    """A 95% percentile interval of the ROC AUC over customers resampled with replacement."""
    n = len(labels)
    found = []
    for _ in range(rounds):
        pick = [rng.randrange(n) for _ in range(n)]
        value = roc_auc([labels[i] for i in pick], [scores[i] for i in pick])
        if not math.isnan(value):
            found.append(value)
    if not found:
        return math.nan, math.nan
    found.sort()
    return found[int(0.025 * (len(found) - 1))], found[int(0.975 * (len(found) - 1))]


def cdnow_rows(ids: str = "odd") -> list[tuple[str, str, float, int]]:
    """CDNOW's purchases (``CDNOW_master.txt`` of the installed ``lifetimes`` wheel), same-day
    purchases of a customer merged, of the customers with an ``odd`` or ``even`` id (or ``all``).
    """
    try:
        import lifetimes
    except ImportError as exc:
        raise ConfigError("the CDNOW data comes with the 'lifetimes' package: "
                          "pip install 'relevanz[evaluate]'") from exc
    master = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"
    merged: dict[tuple[str, str], list[float]] = {}
    for line in master.read_text(encoding="ascii").splitlines():
        fields = line.split()
        if len(fields) != 4 or not fields[0].isdigit():
            continue  # the header line
        cid, day, cds, dollars = fields
        number = int(cid)
        if ids != "all" and number % 2 != (1 if ids == "odd" else 0):
            continue
        entry = merged.setdefault((str(number), day), [0.0, 0])
        entry[0] += float(dollars)
        entry[1] += int(cds)
    return [(cid, f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00:00+00:00", round(v[0], 2), int(v[1]))
            for (cid, day), v in sorted(merged.items(), key=lambda kv: (kv[0][1], int(kv[0][0])))]


def write_cdnow(out: Any, ids: str = "odd") -> int:
    """Write CDNOW as the CSV ``relevanz evaluate`` reads; returns the rows written."""
    rows = cdnow_rows(ids)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return len(rows)
