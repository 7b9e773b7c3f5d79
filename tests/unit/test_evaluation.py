"""The pure parts of ``relevanz evaluate``: scoring, event order, the CDNOW rows."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from schemas.records import ConsentChanged, Purchased
from streams.sim.baselines import recency
from streams.sim.evaluation import Transaction, bootstrap_auc, cdnow_rows, customer_events, roc_auc

T0 = datetime(1997, 1, 1, tzinfo=UTC)


def test_roc_auc_counts_ties_half_and_ranks_missing_scores_lowest() -> None:
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0
    assert roc_auc([True, False], [0.5, 0.5]) == 0.5
    assert roc_auc([True, False, False], [math.nan, 0.2, 0.1]) == 0.0
    assert math.isnan(roc_auc([True, True], [0.1, 0.2]))  # one class only


def test_the_bootstrap_interval_holds_the_estimate() -> None:
    rng = random.Random(3)
    labels = [rng.random() < 0.3 for _ in range(400)]
    scores = [(0.6 if y else 0.4) + rng.gauss(0, 0.2) for y in labels]
    low, high = bootstrap_auc(labels, scores, random.Random(7))
    assert low < roc_auc(labels, scores) < high
    assert high - low < 0.2


def test_each_customer_consents_at_their_first_purchase_before_it_in_event_time() -> None:
    log = [Transaction("b", T0 + timedelta(days=3), 5.0, 2),
           Transaction("a", T0 + timedelta(days=1), 7.0, 0),
           Transaction("b", T0 + timedelta(days=2), 5.0, 1)]
    events = customer_events(log)
    assert [(type(e).__name__, e.customer_id, e.occurred_at.day) for e in events] == [
        ("ConsentChanged", "a", 2), ("Purchased", "a", 2),
        ("ConsentChanged", "b", 3), ("Purchased", "b", 3), ("Purchased", "b", 4)]
    consent = events[0]
    assert isinstance(consent, ConsentChanged)
    assert consent.purposes == ["profiling"]
    purchase = events[1]
    assert isinstance(purchase, Purchased)
    assert purchase.items[0].quantity == 1  # a quantity of 0 is still an order of one
    assert len({e.event_id for e in events}) == len(events)


def test_recency_scores_the_most_recent_buyer_highest() -> None:
    log = [Transaction("a", T0, 1.0, 1), Transaction("b", T0 + timedelta(days=5), 1.0, 1)]
    assert recency(log, ["a", "b"], T0 + timedelta(days=10)) == [-10.0, -5.0]


def test_cdnow_rows_merge_a_customers_purchases_of_one_day_and_keep_one_parity() -> None:
    odd = cdnow_rows("odd")
    assert odd
    assert all(int(cid) % 2 == 1 for cid, *_ in odd)
    days = [(cid, at[:10]) for cid, at, *_ in odd]
    assert len(days) == len(set(days))  # one row per customer and day
    assert odd == sorted(odd, key=lambda r: (r[1], int(r[0])))
