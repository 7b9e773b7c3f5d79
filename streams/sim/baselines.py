"""Textbook baselines that ``relevanz evaluate`` scores next to the engine, in the same run.

Each takes the calibration purchases (before the cutoff) only and returns a
score per customer (higher: more likely to buy in the holdout):

- ``recency``: minus the days since the last purchase;
- ``rfm``: a scikit-learn logistic regression on log recency, log frequency
  and log mean order value, trained on the calibration period itself (its
  features as of ``min(holdout, half the calibration span)`` before the
  cutoff, its label "bought between then and the cutoff"), then applied at
  the cutoff;
- ``bgnbd``: BG/NBD (Fader, Hardie & Lee 2005) fitted by ``lifetimes``
  (:data:`BGNBD_LIBRARY`) on daily repeat purchases; its score is the
  expected number of purchases in the holdout (NaN when it does not converge,
  even with a small penalty).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from streams.errors import ConfigError

if TYPE_CHECKING:
    from streams.sim.transactions import Transaction

BGNBD_LIBRARY = "lifetimes 0.11.3 BetaGeoFitter"


def scores(calibration: Sequence[Transaction], customers: Sequence[str], cutoff: datetime,
           holdout_weeks: int) -> dict[str, list[float]]:
    """Each baseline's score per customer of ``customers`` (same order)."""
    return {"recency": recency(calibration, customers, cutoff),
            "rfm": rfm_logistic(calibration, customers, cutoff, holdout_weeks),
            "bgnbd": bgnbd(calibration, customers, cutoff, holdout_weeks)}


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400


def recency(calibration: Iterable[Transaction], customers: Sequence[str], cutoff: datetime
            ) -> list[float]:
    """Minus the days from each customer's last purchase to ``cutoff``."""
    last: dict[str, datetime] = {}
    for t in calibration:
        last[t.customer_id] = max(last.get(t.customer_id, t.occurred_at), t.occurred_at)
    return [-_days(cutoff - last[c]) for c in customers]


def _rfm(calibration: Iterable[Transaction], at: datetime) -> dict[str, list[float]]:
    days: dict[str, set[Any]] = {}
    spent: dict[str, float] = {}
    last: dict[str, datetime] = {}
    for t in calibration:
        if t.occurred_at >= at:
            continue
        cid = t.customer_id
        days.setdefault(cid, set()).add(t.occurred_at.date())
        spent[cid] = spent.get(cid, 0.0) + t.amount
        last[cid] = max(last.get(cid, t.occurred_at), t.occurred_at)
    return {cid: [math.log1p(_days(at - last[cid])), math.log(len(d)),
                  math.log1p(spent[cid] / len(d))] for cid, d in days.items()}


def rfm_logistic(calibration: Sequence[Transaction], customers: Sequence[str],
                 cutoff: datetime, holdout_weeks: int) -> list[float]:
    """An RFM logistic regression trained within the calibration period (see above)."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise ConfigError("the RFM baseline needs scikit-learn: "
                          "pip install 'relevanz[evaluate]'") from exc
    start = min(t.occurred_at for t in calibration)
    span = min(timedelta(weeks=holdout_weeks), (cutoff - start) / 2)
    then = cutoff - span
    train = _rfm(calibration, then)
    bought = {t.customer_id for t in calibration if then <= t.occurred_at < cutoff}
    ids = sorted(train)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit([train[c] for c in ids], [c in bought for c in ids])
    now = _rfm(calibration, cutoff)
    return [float(p) for p in model.predict_proba([now[c] for c in customers])[:, 1]]


def bgnbd(calibration: Sequence[Transaction], customers: Sequence[str], cutoff: datetime,
          holdout_weeks: int) -> list[float]:
    """BG/NBD's expected purchases in the holdout, fitted on daily repeat purchases."""
    try:
        from lifetimes import BetaGeoFitter
    except ImportError as exc:
        raise ConfigError("the BG/NBD baseline needs lifetimes: "
                          "pip install 'relevanz[evaluate]'") from exc
    days: dict[str, set[Any]] = {}
    for t in calibration:
        days.setdefault(t.customer_id, set()).add(t.occurred_at.date())
    end = (cutoff - timedelta(days=1)).date()
    frequency, age, lifetime = [], [], []
    for c in customers:
        d = sorted(days[c])
        frequency.append(len(d) - 1)
        age.append((d[-1] - d[0]).days)
        lifetime.append((end - d[0]).days)
    import numpy as np

    x, recent, age_t = (np.asarray(v, dtype=float) for v in (frequency, age, lifetime))
    from lifetimes.utils import ConvergenceError

    # Unpenalised as in the paper; a log with too little variety may need a small penalty.
    for penalty in (0.0, 0.001, 0.01, 0.1):
        fitter = BetaGeoFitter(penalizer_coef=penalty)
        try:
            # lifetimes prints its optimiser's report on stdout: keep --json one line.
            with contextlib.redirect_stdout(sys.stderr):
                fitter.fit(x, recent, age_t)
            break
        except ConvergenceError:
            continue
    else:
        return [math.nan] * len(customers)
    expected = fitter.conditional_expected_number_of_purchases_up_to_time(
        holdout_weeks * 7, x, recent, age_t)
    return [float(v) for v in expected]
