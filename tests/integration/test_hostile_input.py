"""Hostile input on every path a worker reads, on the embedded broker and Apache Kafka.

A bad message on an input topic becomes a dead letter; on the compacted
``content`` and ``controls`` topics, which every worker reads whole, it
must not stop the reader, and a worker starting over the same topic (the
compacted topic keeps the message) must start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from confluent_kafka import Producer
from hypothesis import Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.strategies import SearchStrategy

from schemas.codec import decode, pack
from schemas.topics import INPUT_TOPICS
from streams.api.web import bound_port, build_api, serve
from streams.app import Worker, build_worker
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from tests import events
from tests.events import Raw
from tests.harness import (
    consume_all,
    consume_exactly,
    eventually,
    eventually_async,
    isolated_settings,
    produce_raw,
)
from tests.integration.conftest import stop_or_explain
from tests.strategies import hostile_values

pytestmark = pytest.mark.brokers("tansu", "kafka")

AT = (datetime.now(UTC) - timedelta(days=1)).isoformat()
#: Values that once escaped the parser as something other than InvalidEvent.
KNOWN_KILLERS = [
    (b'{"event_id": "e1", "content_id": "\\ud800", "customer_id": "\\ud800",'
     b' "schema_version": 1, "occurred_at": "' + AT.encode() + b'"}'),
    (b"\x82" + pack("schema_version") + b"\x01" + pack("occurred_at")
     + b"\xc7\x0c\xff" + struct.pack(">I", 0) + struct.pack(">q", 2**62)),
    b"[" * 60_000,
    b'{"\\ud800": 1, "schema_version": 1}',
    b'{"schema_version": 1, "event_id": "e", "total": 1' + b"0" * 400 + b"}",
]
#: Drawn per topic from the hostile strategy, on top of the known killers.
DRAWN_PER_TOPIC = 15


def content_item(content_id: str) -> bytes:
    return pack({"event_id": f"item-{content_id}", "content_id": content_id,
                 "schema_version": 1, "occurred_at": AT, "topics": ["fashion"],
                 "channels": ["email"], "slots": ["newsletter-block"],
                 "variants": [{"language": "de", "title": "Mode",
                               "url": "https://shop.example/n1"}],
                 "default_language": "de"})


def drawn(strategy: SearchStrategy[bytes], n: int) -> list[bytes]:
    """``n`` values of ``strategy``, the same on every run (one worker takes them all)."""
    values: list[bytes] = []

    @hypothesis_settings(max_examples=n, database=None, derandomize=True,
                         phases=[Phase.generate], deadline=None)
    @given(strategy)
    def collect(value: bytes) -> None:
        values.append(value)

    collect()
    return values


def hostile_messages() -> list[tuple[str, bytes, bytes]]:
    messages = []
    for topic in [t.name for t in INPUT_TOPICS]:
        values = KNOWN_KILLERS + drawn(hostile_values(topic), DRAWN_PER_TOPIC)
        messages += [(topic, b"c1", value) for value in values]
    return messages


@pytest.fixture
def hostile() -> list[tuple[str, bytes, bytes]]:
    """Drawn before the worker starts (its threads would disturb hypothesis's draws)."""
    return hostile_messages()


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path)


async def test_hostile_messages_on_every_input_topic_and_the_controls_are_accounted_for(
    hostile: list[tuple[str, bytes, bytes]], worker: Worker, settings: Settings
) -> None:
    bad_controls = [("controls", b"all", value) for value in KNOWN_KILLERS]
    produce_raw(settings, hostile + bad_controls)
    valid = [("content", b"n-after", content_item("n-after")),
             ("clicks", b"c1", json.dumps({
                 "event_id": "after", "customer_id": "c1", "schema_version": 1,
                 "occurred_at": AT, "content_id": "n-after"}).encode())]
    produce_raw(settings, valid)

    total = len(hostile) + len(valid)
    counts = worker.accounting
    await eventually(lambda: counts.events_in >= total, 120, f"{total} events")
    assert counts.events_in == total
    applied_hostile = counts.applied - len(valid)  # a drawn value may be valid by chance
    assert counts.applied + counts.duplicates + counts.dead_letters == counts.events_in
    assert counts.dead_letters >= len(hostile) - applied_hostile - counts.duplicates

    # Both readers of the compacted topics are alive and still following them.
    assert worker.catalogue is not None
    await eventually(lambda: "n-after" in worker.catalogue.items, 60, "the item after")
    assert worker.controls is not None
    await eventually(lambda: worker.controls.dead_letters == len(bad_controls), 60,
                     "the bad control records dead-lettered")
    await worker.controls.change(paused=True, changed_by="test")
    assert worker.controls.paused

    letters = [decode(m.value()) for m in consume_exactly(
        settings, "dead-letters", counts.dead_letters + len(bad_controls))]
    assert all(letter["reason"] for letter in letters)
    controls_topic = settings.topic("controls")
    assert sorted(letter["original"] for letter in letters
                  if letter["source_topic"] == controls_topic) == sorted(KNOWN_KILLERS)

    # The compacted topics keep the bad messages: a worker starting over them starts.
    second = build_worker(settings.with_(consumer_group=settings.consumer_group + "-2"))
    await second.start()
    try:
        assert second.catalogue is not None
        assert "n-after" in second.catalogue.items
        assert second.controls is not None
        assert second.controls.paused
    finally:
        await stop_or_explain(second.stop(), "the second worker to stop")


# --- messages near and far above the size limits ------------------------------------

MiB = 1024 * 1024


def produce_large(settings: Settings, messages: list[tuple[str, bytes, bytes]]) -> list[str]:
    """Publish ``messages`` with a producer that takes up to 20 MiB; the error of each
    one the broker refused ("" for those it took)."""
    errors = [""] * len(messages)

    def delivered(index: int) -> object:
        def report(error: object, _message: object) -> None:
            if error is not None:
                errors[index] = str(error)
        return report

    producer = Producer({"bootstrap.servers": settings.broker_servers, "acks": "all",
                         "message.max.bytes": 20 * MiB})
    for index, (topic, key, value) in enumerate(messages):
        producer.produce(settings.topic(topic), key=key, value=value,
                         on_delivery=delivered(index))
        producer.poll(0)
    assert producer.flush(60) == 0, "messages left unconfirmed"
    return errors


def click(event_id: str) -> Raw:
    return events.click(event_id, "c1", at=AT)


async def test_messages_of_1_and_16_mib_among_valid_events_are_each_accounted_for(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path,
                                 max_event_bytes=16 * MiB)
    one = b"\xc1" + bytes(range(256)) * (MiB // 256)  # not msgpack: a dead letter
    sixteen = b"{" + b"x" * (16 * MiB - 1)  # not JSON, at the size limit
    messages = [click("before"), ("clicks", b"c1", one), click("between"),
                ("purchases", b"c1", sixteen), click("after")]
    running = build_worker(settings)
    await running.start()
    try:
        refused = produce_large(settings, messages)
        taken = [m for m, error in zip(messages, refused, strict=True) if not error]
        counts = running.accounting
        await eventually(lambda: counts.events_in >= len(taken), 120, "every message")
        await asyncio.sleep(1.0)  # nothing more comes
        large = [m for m in taken if len(m[2]) > MiB - 1]
        assert (counts.events_in, counts.applied, counts.duplicates, counts.dead_letters) == (
            len(taken), 3, 0, len(large))
        assert running.ingest is not None
        assert running.ingest.publish_blocked is None
    finally:
        await stop_or_explain(running.stop(), "the worker to stop")
    letters = [decode(m.value()) for m in consume_exactly(settings, "dead-letters", len(large))]
    by_topic = {letter["source_topic"]: letter for letter in letters}
    for topic, _, value in large:
        letter = by_topic[settings.topic(topic)]
        kept = len(letter["original"])
        assert kept < MiB
        assert letter["original"] == value[:kept]
        assert f"original is {len(value)} bytes" in letter["reason"]
        assert hashlib.sha256(value).hexdigest() in letter["reason"]
    # Input topics take what RELEVANZ_MAX_EVENT_BYTES admits (Kafka's default would
    # refuse anything above about 1 MB to the producer).
    assert refused == [""] * len(messages)


# --- a flood of hostile messages ----------------------------------------------------

def flood(total: int, large: list[int], seed: int) -> list[tuple[str, bytes | None, bytes]]:
    """``total`` messages over every input topic: one in ten a valid click, the
    rest hostile (drawn values, the known killers, and messages of the ``large``
    sizes), keyed by a few hundred customers, some without a key."""
    rng = random.Random(seed)
    topics = [t.name for t in INPUT_TOPICS]
    # Apache Kafka refuses a keyless message on a compacted topic to its producer
    # (INVALID_RECORD, failing the rest of its batch with it); the embedded broker takes it.
    compacted = {t.name for t in INPUT_TOPICS if t.compacted}
    pool = {topic: KNOWN_KILLERS + drawn(hostile_values(topic), 40) for topic in topics}
    messages: list[tuple[str, bytes | None, bytes]] = []
    for size in large:
        body = b"\xc1" + rng.randbytes(size - 1)  # not msgpack: a dead letter
        messages.append((rng.choice(topics), f"c{rng.randrange(300)}".encode(), body))
    while len(messages) < total:
        key = None if rng.random() < 0.05 else f"c{rng.randrange(300)}".encode()
        if rng.random() < 0.1:
            messages.append(click(f"valid-{len(messages)}"))
            continue
        topic = rng.choice(topics)
        if key is None and topic in compacted:
            key = b"n1"
        messages.append((topic, key, rng.choice(pool[topic])))
    rng.shuffle(messages)
    return messages


async def run_flood(settings: Settings, messages: list[tuple[str, bytes | None, bytes]]
                    ) -> dict[str, float]:
    running = build_worker(settings)
    await running.start()
    runner = await serve(build_api(running), "127.0.0.1", 0)
    started = time.monotonic()
    try:
        refused = produce_large(settings, messages)  # type: ignore[arg-type]
        assert [e for e in refused if e] == [], "the broker refused messages"
        taken = len(messages)
        counts = running.accounting
        await eventually(lambda: counts.events_in >= taken, 600, f"{taken} messages")
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.0)  # nothing more comes
        assert counts.events_in == taken
        assert counts.applied + counts.duplicates + counts.dead_letters == counts.events_in
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{bound_port(runner)}/ready"

            async def ready() -> bool:
                async with session.get(url) as response:
                    return response.status == 200

            await eventually_async(ready, 60, "the worker to be ready", poll_s=0.2)
        assert running.catalogue is not None
        assert running.controls is not None
        produce_raw(settings, [click("after-the-flood")])
        await eventually(lambda: counts.events_in == taken + 1, 60, "an event after it")
        figures = {"messages": float(len(messages)), "taken": float(taken),
                   "applied": float(counts.applied), "duplicates": float(counts.duplicates),
                   "dead_letters": float(counts.dead_letters), "seconds": elapsed}
    finally:
        await stop_or_explain(runner.cleanup(), "the API to stop")
        await stop_or_explain(running.stop(), "the worker to stop")
    published = consume_all(settings, "dead-letters", at_least=int(figures["dead_letters"]))
    assert len(published) == figures["dead_letters"]
    assert max(len(m.value()) for m in published) <= 1_000_000
    return figures


async def test_a_flood_of_10000_hostile_messages_up_to_16_mib(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = flood(10_000, large=[MiB, 4 * MiB, 8 * MiB, 16 * MiB, 16 * MiB], seed=4)
    settings = isolated_settings(broker.bootstrap_servers, tmp_path,
                                 max_event_bytes=16 * MiB)
    figures = await run_flood(settings, messages)
    print("flood:", json.dumps(figures))
