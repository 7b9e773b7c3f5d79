"""Worker processes that die or are stopped mid-stream lose nothing.

Real ``relevanz worker`` processes on the embedded broker, sharing one
embedded store file.  Every count is exact: the store's ledger must hold
exactly the valid events, the dead-letters topic exactly the malformed ones
(a repeat only as the redelivery of the same offset), and each cleanly
stopped worker's ``worker_stopped`` line must balance.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.codec import decode
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from streams.sim.traffic import Message, TrafficConfig, TrafficGenerator
from streams.topics import ensure_topics
from tests.faults import (
    WorkerProcess,
    balanced,
    check_dead_letters,
    check_outputs_published,
    committed,
    expected,
    ledger,
    worker_env,
)
from tests.harness import eventually, eventually_async, isolated_settings, produce_raw

#: Run against the embedded broker and Apache Kafka (tests/conftest.py).
pytestmark = pytest.mark.brokers("tansu", "kafka")

SHUTDOWN_TIMEOUT_S = 10


def traffic(n: int, seed: int) -> list[Message]:
    """Live-looking traffic with malformed events and redeliveries, all msgpack.

    Erasure requests are left out: an erasure deletes the customer's ledger
    entries, and the ledger is what these tests count.
    """
    config = TrafficConfig.ending_at(datetime.now(UTC), n, seed=seed, customers=300,
                                     catalogue_size=20, malformed_share=0.03,
                                     duplicate_share=0.02, json_share=0.0)
    return [m for m in TrafficGenerator(config).messages(n)
            if m.malformed or m.topic != "consents"
            or decode(m.value).get("action") != "erasure_requested"]


def publish(settings: Settings, messages: list[Message]) -> None:
    produce_raw(settings, [(m.topic, m.key, m.value) for m in messages])


async def test_a_killed_worker_s_partitions_move_to_the_survivor_and_nothing_is_lost(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)
    messages = traffic(6000, seed=21)
    want = expected(messages)
    env = worker_env(settings, RELEVANZ_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S))
    doomed = WorkerProcess(env, tmp_path / "doomed.log")
    survivor = WorkerProcess(env, tmp_path / "survivor.log")
    everything = set(range(settings.partitions))
    try:
        def shared() -> bool:
            mine, theirs = doomed.assignment(), survivor.assignment()
            return bool(mine and theirs and not mine & theirs and mine | theirs == everything)

        await eventually(shared, 90, "both workers to own some partitions")
        taken_over = everything - (survivor.assignment() or set())
        publish(settings, messages)
        # Kill one worker mid-stream: part of its share is stored, part not yet
        # consumed, and some acknowledged offsets are not committed yet.
        await eventually(lambda: len(ledger(settings)) >= len(want.ledger) // 4, 90,
                         "a quarter of the stream stored")
        doomed.kill()
        stored_at_kill = len(ledger(settings))
        assert stored_at_kill < len(want.ledger), "the stream was over before the kill"

        await eventually(lambda: survivor.assignment() == everything, 90,
                         "the survivor to take every partition")

        async def all_stored() -> bool:
            return ledger(settings) == want.ledger

        await eventually_async(all_stored, 90, "every valid event in the store", poll_s=0.5)
        await eventually_async(lambda: _equals(committed(settings), want.total), 60,
                               "every offset committed", poll_s=0.5)
        code, _ = survivor.terminate(SHUTDOWN_TIMEOUT_S + 15)
        assert code == 0
    finally:
        doomed.close()
        survivor.close()

    counts = survivor.stopped()
    assert balanced(counts), counts
    assert counts["clean"] is True
    assert taken_over, "the doomed worker owned no partition"
    # The survivor stored what the doomed worker had not; a redelivery of what it had
    # stored without committing is recognised by event_id, never applied twice.
    assert counts["applied"] >= len(want.ledger) - stored_at_kill
    assert ledger(settings) == want.ledger
    check_dead_letters(settings, want)
    # Every decision and pending send stored was published. (Whether the kill fell
    # between a batch's write and its delivery is luck; test_ingest.py makes sure.)
    check_outputs_published(settings)


async def _equals(value: int, target: int) -> bool:
    return value == target


async def test_sigterm_under_load_stops_cleanly_and_a_restart_loses_nothing(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)
    messages = traffic(8000, seed=22)
    want = expected(messages)
    await asyncio.to_thread(ensure_topics, settings)
    publish(settings, messages)  # a backlog: the worker is busy from its first batch
    env = worker_env(settings, RELEVANZ_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S))

    first = WorkerProcess(env, tmp_path / "first.log")
    try:
        await eventually(lambda: len(ledger(settings)) >= 1000, 90, "part of the backlog")
        code, took_s = first.terminate(SHUTDOWN_TIMEOUT_S + 15)
    finally:
        first.close()
    assert code == 0
    # The bound, plus starting and ending the interpreter.
    assert took_s < SHUTDOWN_TIMEOUT_S + 5, f"took {took_s:.1f}s to stop"
    one = first.stopped()
    assert one["clean"] is True, one
    assert balanced(one), one
    assert 0 < one["events_in"] < want.total, "SIGTERM should arrive mid-stream"
    # Everything it counted is in the store, and exactly that much is committed.
    assert len(ledger(settings)) == one["applied"]
    assert committed(settings) == one["events_in"]

    second = WorkerProcess(env, tmp_path / "second.log")
    try:
        await eventually_async(lambda: _equals(committed(settings), want.total), 90,
                               "every offset committed", poll_s=0.5)
        code, _ = second.terminate(SHUTDOWN_TIMEOUT_S + 15)
    finally:
        second.close()
    assert code == 0
    two = second.stopped()
    assert balanced(two), two
    # A clean stop redelivers nothing: the two runs split the stream exactly.
    assert one["events_in"] + two["events_in"] == want.total
    assert one["applied"] + two["applied"] == len(want.ledger)
    assert one["duplicates"] + two["duplicates"] == want.duplicates
    assert one["dead_letters"] + two["dead_letters"] == sum(want.malformed.values())
    assert ledger(settings) == want.ledger
    letters = check_dead_letters(settings, want)
    assert len(letters) == sum(want.malformed.values())
