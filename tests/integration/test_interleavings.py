"""Consent does not depend on how the input topics interleave.

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
consent record.  (Tag dating, the language and time zone a decision sees,
and the shared online models still follow the order events are read in; the
README's section on time lists them with their bounds.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.core.consent import ConsentPolicy
from agents.core.customer import CustomerState
from agents.ingest import Output
from schemas.records import ContentPublished, DecisionMade, Record, SendTriggered
from schemas.validation import Limits, parse_message
from streams.app import build_stage
from streams.settings import Settings
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


async def run(records: Sequence[Record], sizes: Sequence[int], path: Path) -> dict[str, Any]:
    """What the stage emits and stores for ``records`` cut into batches of ``sizes``."""
    config = Settings(store_url=f"embedded:{path}", consent_default=frozenset())
    store = open_store(config)
    await store.open()
    try:
        stage = build_stage(config, store, LIMITS)
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
    assert_consented(result["outputs"], result["consents"])
