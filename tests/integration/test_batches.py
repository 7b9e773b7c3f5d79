"""The ingest agent's batching (:func:`agents.faust_batches.batches`) on real Faust and broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agents.faust_batches import batches
from streams.app import build_faust_app
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.harness import eventually, isolated_settings, produce_raw


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path)


async def _collect(settings: Settings, max_: int, within_s: float, n: int, timeout_s: float
                   ) -> tuple[list[list[bytes]], float]:
    """Batches of ``n`` produced events, and the seconds from producing to the first batch."""
    ensure_topics(settings)
    app = build_faust_app(settings)
    topic = app.topic(settings.topic("clicks"), key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    got: list[list[bytes]] = []
    first_at: list[float] = []

    @app.agent(topic, name="batches-under-test")
    async def collect(stream: Any) -> None:
        async for events in batches(stream, max_, within_s):
            first_at.append(time.monotonic())
            got.append([event.message.value for event in events])
            for event in events:
                await stream.ack(event)

    await app.start()
    try:
        await eventually(lambda: bool(app.consumer.assignment()), 60, "partitions assigned")
        produced_at = time.monotonic()
        produce_raw(settings, [("clicks", b"c1", f"{i:04d}".encode()) for i in range(n)])
        await eventually(lambda: sum(map(len, got)) >= n, timeout_s, f"{n} events")
    finally:
        await app.stop()
    return got, first_at[0] - produced_at


async def test_a_batch_goes_once_every_delivered_event_is_in_it_not_when_the_timer_ends(
        settings: Settings) -> None:
    # A 60 s timer: waiting for it (as Faust's noack_take does) would time the test out.
    got, waited_s = await _collect(settings, 500, 60.0, 3, timeout_s=30)
    assert waited_s < 30
    assert sorted(value for batch in got for value in batch) == [b"0000", b"0001", b"0002"]


async def test_batches_hold_at_most_max_events_and_keep_the_partition_s_order(
        settings: Settings) -> None:
    got, _ = await _collect(settings, 7, 0.01, 100, timeout_s=60)
    assert max(map(len, got)) <= 7
    # One key, so one partition: its events come in the order they were produced.
    assert [value for batch in got for value in batch] == [f"{i:04d}".encode()
                                                           for i in range(100)]
    assert len(got) >= 100 // 7 + 1
