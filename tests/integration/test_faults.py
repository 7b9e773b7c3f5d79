"""Faults inside one worker: the store goes away for a while; a flood of fuzzed input.

An in-process worker on the embedded broker and a real embedded store; every
count is exact.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from structlog.testing import capture_logs

from schemas.codec import pack
from schemas.topics import INPUT_TOPICS, TOPICS
from streams.app import build_worker
from streams.broker import EmbeddedBroker
from tests import events
from tests.faults import committed, consume_decoded, ledger
from tests.harness import eventually, eventually_async, isolated_settings, produce_raw
from tests.strategies import key_of, payloads_for

#: Run against the embedded broker and Apache Kafka (tests/conftest.py).
pytestmark = pytest.mark.brokers("tansu", "kafka")

_ints = st.integers(-(2**62), 2**62)  # what msgpack can carry
CUSTOMER_TOPICS = tuple(t.name for t in INPUT_TOPICS if t.name != "content")
Raw = tuple[str, bytes | None, bytes]


def click(event_id: str, customer: str) -> Raw:
    return events.click(event_id, customer)


def clicks(prefix: str, n: int) -> list[Raw]:
    return [click(f"{prefix}-{i}", f"c-{i % 97}") for i in range(n)]


async def test_a_store_outage_holds_the_batch_commits_nothing_past_it_and_catches_up(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)
    worker = build_worker(settings)
    assert worker.ingest is not None
    ingest = worker.ingest
    await worker.start()
    try:
        before = clicks("before", 300)
        produce_raw(settings, before)
        await eventually(lambda: worker.accounting.applied == 300, 60, "the first 300 applied")

        async def committed_is(n: int) -> bool:
            return committed(settings) == n

        await eventually_async(lambda: committed_is(300), 30, "300 offsets committed",
                               poll_s=0.3)

        # The outage: another connection holds the file's write lock, so every
        # write fails with "database is locked" once SQLite's busy timeout passes.
        lock = sqlite3.connect(settings.store_path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        during = clicks("during", 2000)
        with capture_logs() as logs:
            produce_raw(settings, during)

            def retries() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "store_unavailable_retrying"]

            await eventually(lambda: len(retries()) >= 2, 60, "the worker to retry twice")
            # One batch held (at most 500 messages): nothing past it is consumed,
            # counted, stored or committed while the store is down.
            assert ingest.in_flight == 1
            assert worker.accounting.events_in == 300
            assert len(ledger(settings)) == 300
            assert committed(settings) == 300
            lock.execute("ROLLBACK")
            lock.close()

            await eventually(lambda: worker.accounting.events_in == 2300, 90,
                             "the worker to catch up")
        backoffs = [e["retry_in_s"] for e in retries()]
        assert backoffs == sorted(backoffs)
        assert max(backoffs) <= ingest.max_backoff_s
        assert "database is locked" in retries()[0]["error"]
        counts = worker.accounting
        assert (counts.applied, counts.duplicates, counts.dead_letters) == (2300, 0, 0)
        assert {eid for _, eid in ledger(settings)} == {
            f"{prefix}-{i}" for prefix, n in (("before", 300), ("during", 2000))
            for i in range(n)}
        await eventually_async(lambda: committed_is(2300), 30, "every offset committed",
                               poll_s=0.3)
    finally:
        await worker.stop()


async def test_a_stop_during_a_store_outage_is_bounded_and_leaves_the_batch_for_redelivery(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path, shutdown_timeout_s=8.0)
    worker = build_worker(settings)
    await worker.start()
    lock = sqlite3.connect(settings.store_path, isolation_level=None)
    stopped = False
    try:
        lock.execute("BEGIN IMMEDIATE")
        with capture_logs() as logs:
            produce_raw(settings, clicks("held", 200))
            await eventually(
                lambda: any(e["event"] == "store_unavailable_retrying" for e in logs), 60,
                "the worker to retry")
            started = time.monotonic()
            stopped = True
            await worker.stop()
            took_s = time.monotonic() - started
        assert took_s < settings.shutdown_timeout_s + 1, f"took {took_s:.1f}s to stop"
        assert any(e["event"] == "store_unavailable_batch_left_for_redelivery" for e in logs)
        assert worker.accounting.events_in == 0
        assert committed(settings) == 0
    finally:
        lock.close()
        if not stopped:
            await worker.stop()

    again = build_worker(settings)
    await again.start()
    try:
        await eventually(lambda: again.accounting.events_in == 200, 60, "the redelivery")
        assert (again.accounting.applied, again.accounting.duplicates) == (200, 0)
        assert len(ledger(settings)) == 200
    finally:
        await again.stop()


# --------------------------------------------------------------------------- #
# Fuzzed input


def _near_valid() -> SearchStrategy[Raw]:
    """A valid event of a customer topic with one defect that breaks its contract."""

    def broken(topic: str) -> SearchStrategy[Raw]:
        def apply(payload: dict[str, Any], defect: tuple[str, Any]) -> Raw:
            kind, value = defect
            key = key_of(topic, payload)
            if kind == "drop":
                del payload[value]
            elif kind == "key":
                key = value
            elif kind == "truncate":
                raw = pack(payload)
                return (topic, key, raw[: max(1, min(value, len(raw) - 1))])
            else:
                payload[kind] = value
            return (topic, key, pack(payload))

        defects = st.one_of(
            st.tuples(st.just("drop"),
                      # The key field: customer_id, or visitor_id on the visitor's topics.
                      st.sampled_from(("event_id", TOPICS[topic].key or "event_id",
                                       "occurred_at", "schema_version"))),
            st.tuples(st.just("schema_version"),
                      st.integers(1000, 2**62) | st.integers(-(2**62), 0) | st.text()),
            st.tuples(st.just("occurred_at"),
                      st.datetimes(min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - naive on purpose
                                   max_value=datetime(2030, 1, 1)).map(  # noqa: DTZ001
                          datetime.isoformat)),
            st.tuples(st.just("event_id"), _ints | st.none() | st.binary()),
            st.tuples(st.just("customer_id"), _ints | st.lists(st.text(), max_size=2)),
            st.tuples(st.from_regex(r"zz_[a-z]{1,8}", fullmatch=True), st.text(max_size=5)),
            st.tuples(st.just("key"), st.none() | st.binary(min_size=1).map(lambda b: b"x" + b)),
            st.tuples(st.just("truncate"), st.integers(min_value=1, max_value=200)),
        )
        return st.builds(apply, payloads_for(topic), defects)

    return st.sampled_from(CUSTOMER_TOPICS).flatmap(broken)


def _random_bytes() -> SearchStrategy[Raw]:
    """Whatever bytes and keys, on any customer topic."""
    return st.tuples(st.sampled_from(CUSTOMER_TOPICS), st.none() | st.binary(max_size=40),
                     st.binary(max_size=300))


def _draw(strategy: SearchStrategy[Raw], n: int) -> list[Raw]:
    """``n`` deterministic examples of ``strategy`` (generation only, no shrinking)."""
    found: list[Raw] = []

    @hypothesis_settings(max_examples=n, derandomize=True, database=None,
                         phases=[Phase.generate], deadline=None,
                         suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(message: Raw) -> None:
        found.append(message)

    collect()
    return found


async def test_a_flood_of_fuzzed_messages_never_stops_the_worker_and_all_are_dead_lettered(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)
    fuzzed = _draw(_random_bytes(), 400) + _draw(_near_valid(), 400)
    assert len(fuzzed) >= 700
    valid = clicks("valid", 100)
    # Valid events spread through the flood: each batch mixes both.
    step = len(fuzzed) // len(valid)
    stream = [m for i, v in enumerate(valid) for m in (*fuzzed[i * step:(i + 1) * step], v)]
    stream += fuzzed[len(valid) * step:]
    assert len(stream) == len(fuzzed) + len(valid)

    worker = build_worker(settings)
    await worker.start()
    try:
        produce_raw(settings, stream)
        await eventually(lambda: worker.accounting.events_in == len(stream), 90,
                         "every message consumed")
        counts = worker.accounting
        assert (counts.applied, counts.duplicates, counts.dead_letters) == (
            len(valid), 0, len(fuzzed))
        letters = consume_decoded(settings, "dead-letters", len(fuzzed))
        assert len(letters) == len(fuzzed)
        assert Counter(letter["original"] for letter in letters) == Counter(
            value for _, _, value in fuzzed)
        assert all(letter["reason"] for letter in letters)
        assert {eid for _, eid in ledger(settings)} == {f"valid-{i}" for i in range(100)}

        # Still consuming after the flood.
        produce_raw(settings, [click("after", "c-after")])
        await eventually(lambda: worker.accounting.applied == len(valid) + 1, 60,
                         "the event after the flood")
    finally:
        await worker.stop()
