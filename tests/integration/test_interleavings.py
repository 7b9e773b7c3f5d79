"""Consent, sends and predictions do not depend on how the input topics interleave.

Kafka orders a customer's events within a topic, not across topics, so a
worker may read the clicks, purchases, consents and profiles of the same
customers in any interleaving.  This test takes one stream of synthetic
traffic, keeps each topic in its own order, interleaves the topics at
random, cuts the result into batches of random size and feeds it through
the customer stage as the worker wires it (``streams.app.build_stage``),
on the embedded SQLite store, with the shipped strict consent default.

What consent allowed must be what it allowed in the run in event-time order:
the same events profiled for each customer (history, purchase figures, click
times per topic), the same consent and master data, the same counts of events
skipped for want of consent, forgotten and erased.  Every decision and send
trigger must be allowed as of its event time by the customer's complete
consent record.

The sends left standing must be the same too: every send trigger not
cancelled, by customer, campaign, channel, content and send time (the send
hour within the zone offset a profile read late can move it by)
(an order read after a reminder's click cancels the reminder; read before
it, it refuses the reminder: both end with no send), and for every customer
the predictions as of one time after the stream (purchase probability and
churn risk from the stored state, hour profile, items bought, latest event).

The shared online models are held fixed for this, through the stage's own
seams: no content policy (content by the newest-item rule, as replay
decides it) and outcome models that do not learn
(``Forecaster(learn=False)``), because what a shared model has learnt by a
given event depends on the order every customer's events were read in.
The language variant of a send follows the customer's master data as read
so far (a profile update dated before the send but read after it is not
seen).  Trigger ids (a follow-up's key carries the time its tag was assigned, and
which signal crosses a tag's threshold follows read order), counts of
triggers later cancelled and of events released after consent also follow
read order; the README's section on time lists them with their bounds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.core.consent import ConsentPolicy
from agents.core.customer import CustomerState
from agents.core.predictions import Summary, features
from agents.ingest import Output
from agents.pipeline.forecasts import Forecaster
from schemas.records import (
    ConsentChanged,
    ContentPublished,
    DecisionMade,
    Record,
    SendCancelled,
    SendTriggered,
)
from schemas.validation import Limits, parse_message
from streams.app import build_stage
from streams.settings import Settings
from streams.sim.evaluation import (
    Transaction,
    _learnt_weights,
    customer_events,
    replay_in_process,
)
from streams.sim.traffic import TrafficConfig, TrafficGenerator
from streams.store import BatchWrite, open_store

#: The wall clock the stage is given; nothing it decides may depend on it.
NOW = datetime(2026, 6, 1, tzinfo=UTC)
LIMITS = Limits()
#: Interleaved topics (the catalogue is read whole before any customer event).
TOPICS = ("clicks", "purchases", "consents", "profiles")
#: Counts that follow from consent alone.
CONSENT_COUNTS = ("skipped_without_consent", "forgotten", "erasures")
POLICY = ConsentPolicy()


def _records() -> tuple[list[ContentPublished], dict[str, list[Record]]]:
    config = TrafficConfig(seed=11, customers=40, catalogue_size=12, malformed_share=0.0,
                           duplicate_share=0.0, start=datetime(2026, 3, 2, 9, tzinfo=UTC),
                           mean_gap_s=20.0)
    content: list[ContentPublished] = []
    by_topic: dict[str, list[Record]] = {t: [] for t in TOPICS}
    for message in TrafficGenerator(config).messages(500):
        record = parse_message(message.topic, message.key, message.value, now=NOW,
                               limits=LIMITS)
        if isinstance(record, ContentPublished):
            content.append(record)
        else:
            by_topic[message.topic].append(record)
    return content, by_topic


CONTENT, BY_TOPIC = _records()
T_TRAIN = datetime(2026, 1, 1, tzinfo=UTC)
#: When the predictions are asked for: a day after the last event.
AS_OF = max(r.occurred_at for rs in BY_TOPIC.values() for r in rs) + timedelta(days=1)


def event_time_order() -> list[Record]:
    """Every customer event by event time (ties: in the order generated)."""
    rank = {t: i for i, t in enumerate(TOPICS)}
    indexed = [(r.occurred_at, rank[t], i, r) for t in TOPICS for i, r in enumerate(BY_TOPIC[t])]
    return [r for *_, r in sorted(indexed, key=lambda x: x[:3])]


def interleave(choices: Sequence[str]) -> list[Record]:
    """The topics merged in the order ``choices`` names them, each topic in its own order."""
    position = dict.fromkeys(TOPICS, 0)
    merged = []
    for topic in choices:
        merged.append(BY_TOPIC[topic][position[topic]])
        position[topic] += 1
    return merged


def assert_consented(outputs: Sequence[Output], consents: dict[str, Any]) -> None:
    """Every decision and trigger in ``outputs`` is allowed as of its event time."""
    for _, _, record in outputs:
        if not isinstance(record, DecisionMade | SendTriggered):
            continue
        consent = consents.get(record.customer_id)
        if consent is None:
            continue  # erased since
        state = CustomerState(record.customer_id, consent=consent)
        at = record.decided_at if isinstance(record, DecisionMade) else record.created_at
        assert POLICY.may_personalise(state, at), record
        assert POLICY.may_profile(state, at), record
        if isinstance(record, SendTriggered):
            assert POLICY.may_send(state, record.channel, at), record


def trained(forecaster: Forecaster) -> None:
    """Teach the outcome models one fixed lesson (recent buyers buy, lapsed ones leave),
    so that what they answer depends on each customer's features, not a constant."""
    for n in range(120):
        orders, days = n % 6, (n * 7) % 90
        summary = Summary(orders=orders, revenue=20.0 * orders, units=orders,
                          first_order=T_TRAIN - timedelta(days=120) if orders else None,
                          last_order=T_TRAIN - timedelta(days=days) if orders else None,
                          last_event_at=T_TRAIN - timedelta(days=days), clicks=n % 9)
        x = features(summary, T_TRAIN)
        forecaster.predictors.purchase.learn_one(x, orders > 0 and days < 30)
        forecaster.predictors.churn.learn_one(x, days > 45)


def _rounded(values: Any) -> Any:
    if isinstance(values, dict):
        return {k: round(v, 9) for k, v in values.items()}
    return None if values is None else tuple(round(v, 9) for v in values)


def standing(outputs: Sequence[Output]) -> list[tuple[object, ...]]:
    """The send triggers not cancelled, as what a channel would send, sorted."""
    cancelled = {r.trigger_id for _, _, r in outputs if isinstance(r, SendCancelled)}
    return sorted((r.customer_id, r.campaign_id, r.channel, r.content_id, r.send_at)
                  for _, _, r in outputs
                  if isinstance(r, SendTriggered) and r.trigger_id not in cancelled)


#: How far the time zone a decision sees can move a send: the widest gap between two
#: UTC offsets (UTC-12 to UTC+14).
ZONE_SPREAD = timedelta(hours=26)


def assert_same_sends(got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> None:
    """The same sends (customer, campaign, channel, content), each at the same time but
    for the zone a profile read late may move it by (README, "What processing order
    can still change")."""
    assert [s[:4] for s in got] == [s[:4] for s in expected]
    moved = [(g, e) for g, e in zip(got, expected, strict=True)
             if abs(g[4] - e[4]) > ZONE_SPREAD]
    assert not moved, moved


async def run(records: Sequence[Record], sizes: Sequence[int], path: Path) -> dict[str, Any]:
    """What the stage emits and stores for ``records`` cut into batches of ``sizes``."""
    config = Settings(store_url=f"embedded:{path}", consent_default=frozenset())
    store = open_store(config)
    await store.open()
    try:
        stage = build_stage(config, store, LIMITS)
        # The shared models held fixed (see the module doc): no content policy, and
        # outcome models that resolve their labels but do not learn them.
        stage.learner = None
        forecaster = stage.forecaster
        assert forecaster is not None
        trained(forecaster)
        forecaster.learn = False
        await stage.apply(CONTENT, NOW)
        await stage.commit(BatchWrite(events=[(c.content_id, c.event_id) for c in CONTENT]), NOW)
        outputs: list[Output] = []
        start, turn = 0, 0
        while start < len(records):
            batch = records[start:start + sizes[turn % len(sizes)]]
            start, turn = start + len(batch), turn + 1
            emitted, failed = await stage.apply(batch, NOW)
            assert not failed
            outputs += emitted
            await stage.commit(BatchWrite(events=[(r.customer_id, r.event_id) for r in batch]), NOW)
        counts = stage.accounting.as_dict()
        customers = {s.customer_id: s async for s in store.iter_customers(NOW)}
        return {
            "outputs": outputs,
            "counts": {k: counts[k] for k in CONSENT_COUNTS},
            # What consent let the engine use, customer by customer: the events
            # profiled (history, purchase figures, click times per topic), the
            # consent and master data, and what still waits for a consent.
            "profiled": {cid: (
                [(h.event_id, h.kind) for h in s.history if h.kind in ("click", "purchase")],
                s.purchases, {t: i.recent for t, i in s.interests.items()},
                s.consent, s.master, [e.event_id for e in s.parked])
                for cid, s in sorted(customers.items())},
            "consents": {cid: s.consent for cid, s in customers.items()},
            "sends": standing(outputs),
            # Decayed sums: equal up to rounding (added up in another order).
            "predictions": {cid: (
                _rounded(forecaster.predict_at(s, AS_OF)),
                None if s.predictions is None else (
                    _rounded(s.predictions.hours), s.predictions.hours_at,
                    s.predictions.units, s.predictions.at), s.last_event_at)
                for cid, s in sorted(customers.items())},
        }
    finally:
        await store.close()


@pytest.fixture(scope="module")
def in_time_order(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("in-time-order") / "store.db"
    return asyncio.run(run(event_time_order(), [50], path))


def test_the_stream_exercises_consent_and_sends(in_time_order: dict[str, Any]) -> None:
    topics = {topic for topic, _, _ in in_time_order["outputs"]}
    assert {"decisions", "send-triggers", "interest-tags"} <= topics
    assert len(in_time_order["sends"]) > 10
    predicted = [p for p, *_ in in_time_order["predictions"].values() if p is not None]
    assert len(predicted) > 10
    assert in_time_order["counts"]["skipped_without_consent"] > 0
    assert_consented(in_time_order["outputs"], in_time_order["consents"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(choices=st.permutations([t for t in TOPICS for _ in BY_TOPIC[t]]),
       sizes=st.lists(st.integers(1, 80), min_size=1, max_size=5))
def test_any_interleaving_of_the_topics_gives_the_same_outcome(
        choices: list[str], sizes: list[int], in_time_order: dict[str, Any],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("interleaved") / "store.db"
    result = asyncio.run(run(interleave(choices), sizes, path))
    assert result["counts"] == in_time_order["counts"]
    assert result["profiled"] == in_time_order["profiled"]
    assert_same_sends(result["sends"], in_time_order["sends"])
    assert result["predictions"] == in_time_order["predictions"]
    assert_consented(result["outputs"], result["consents"])


# -- learning on the event-time clock -------------------------------------------------
#
# The outcome models learn from examples opened on a schedule in event time and
# labelled when their horizon ends, both on the worker's clock.  That clock is the low
# watermark over the input partitions (agents/core/watermarks.py): while one topic is
# read ahead of another, it stays with the slower one, so every example is opened only
# once each topic has been read up to its time.  Then what the models learn does not
# depend on how the topics interleave, and neither do the predictions served: this
# holds with the models learning, replayed as ``relevanz evaluate`` does.

#: Purchases of 40 customers over 150 days, each from a first purchase in the first 60
#: days, some stopping early (so recency matters), at times of day of their own.
_START = datetime(2026, 1, 5, tzinfo=UTC)
CUTOFF = _START + timedelta(days=150)


def _transactions() -> list[Transaction]:
    rng = random.Random(3)
    found = []
    for n in range(40):
        at = _START + timedelta(days=rng.uniform(0, 60))
        stops = at + timedelta(days=rng.choice((10, 40, 200)))
        while at < min(stops, CUTOFF):
            found.append(Transaction(f"c{n}", at, round(rng.uniform(5, 80), 2),
                                     rng.randint(1, 4)))
            at += timedelta(days=rng.expovariate(1 / 12), seconds=rng.randint(1, 3600))
    return found


BY_SOURCE = {"consents": [r for r in customer_events(_transactions())
                          if isinstance(r, ConsentChanged)],
             "purchases": [r for r in customer_events(_transactions())
                           if not isinstance(r, ConsentChanged)]}


def _replay(records: Sequence[Record], sizes: Sequence[int]) -> dict[str, Any]:
    """The served predictions and what each outcome model learnt."""
    served, forecaster = asyncio.run(replay_in_process(
        Settings(), records, CUTOFF, lambda _: None, sizes))
    return {"served": {c: (round(s.purchase, 12), round(s.churn, 12))
                       for c, s in sorted(served.items())},
            "learnt": [(q["model"], q["examples"]) for q in forecaster.predictors.quality()],
            "weights": {o: _learnt_weights(forecaster, o) for o in ("purchase", "churn")}}


@pytest.fixture(scope="module")
def learnt_in_time_order() -> dict[str, Any]:
    return _replay(customer_events(_transactions()), [25])


def test_the_models_learn_from_the_stream(learnt_in_time_order: dict[str, Any]) -> None:
    assert all(examples > 100 for _, examples in learnt_in_time_order["learnt"])
    assert any(abs(w) > 0.01 for w in learnt_in_time_order["weights"]["purchase"].values())


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(choices=st.permutations([t for t, rs in BY_SOURCE.items() for _ in rs]),
       sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4))
# Every purchase read before any consent, one a batch: while the consents are unread the
# clock is not known, and each purchase waits for its consent however old it is.
@example(choices=[t for t in ("purchases", "consents") for _ in BY_SOURCE[t]], sizes=[1])
def test_any_interleaving_teaches_the_models_the_same(
        choices: list[str], sizes: list[int], learnt_in_time_order: dict[str, Any]) -> None:
    position = dict.fromkeys(BY_SOURCE, 0)
    merged = []
    for topic in choices:
        merged.append(BY_SOURCE[topic][position[topic]])
        position[topic] += 1
    assert _replay(merged, sizes) == learnt_in_time_order
