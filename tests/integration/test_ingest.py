"""The ingest agent against the real embedded broker and a real embedded store."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from agents import ingest
from agents.pipeline import customer_stage as profiles
from schemas.codec import decode, pack
from schemas.topics import OUTPUT_TOPICS
from streams.api.status import Monitor
from streams.app import Worker, build_worker
from streams.broker import EmbeddedBroker
from streams.servers.kafka import KafkaServer
from streams.settings import Settings
from streams.sim.traffic import MALFORMED_KINDS, TrafficConfig, TrafficGenerator
from streams.store import open_store
from tests.events import click_fields
from tests.faults import ledger
from tests.harness import (
    consume_all,
    consume_exactly,
    eventually,
    isolated_settings,
    produce_raw,
)

#: Run against the embedded broker and Apache Kafka (tests/conftest.py).
pytestmark = pytest.mark.brokers("tansu", "kafka")


def click(event_id: str, customer: str = "c1", **extra: object) -> dict[str, object]:
    return click_fields(event_id, customer, at=datetime.now(UTC) - timedelta(days=3), **extra)


def published_outputs(settings: Settings) -> Counter[tuple[str, bytes]]:
    """How often each (topic, value) was published on the topics the worker emits to."""
    return Counter((m.topic(), m.value()) for topic in OUTPUT_TOPICS
                   for m in consume_all(settings, topic.name))


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path)


async def test_every_message_is_applied_duplicate_or_dead_lettered(
    worker: Worker, settings: Settings
) -> None:
    valid = [("clicks", b"c1", pack(click("e1"))),
             ("clicks", b"c2", json.dumps(click("e2", "c2")).encode())]
    redelivered = [valid[0]]
    malformed = [
        ("clicks", b"c1", b"\xc1\xff garbage"),
        ("clicks", b"c1", pack({**click("e3"), "schema_version": 9})),
        ("purchases", b"c1", pack({**click("e4"), "order_id": "o1"})),
        ("clicks", b"c1", b'{"event_id": '),
        ("clicks", b"other", pack(click("e5"))),
        ("clicks", b"c1", pack(click("e6", occurred_at="2030-01-01T00:00:00"))),
    ]
    produce_raw(settings, valid + redelivered + malformed)

    total = len(valid) + len(redelivered) + len(malformed)
    await eventually(lambda: worker.accounting.events_in >= total, 60, f"{total} events")

    counts = worker.accounting
    assert (counts.events_in, counts.applied, counts.duplicates, counts.dead_letters) == (
        total, 2, 1, len(malformed))
    letters = [decode(m.value()) for m in consume_exactly(settings, "dead-letters",
                                                          len(malformed))]
    originals = {letter["original"] for letter in letters}
    assert originals == {value for _, _, value in malformed}
    by_original = {letter["original"]: letter for letter in letters}
    assert by_original[b"\xc1\xff garbage"]["reason"].startswith("not valid msgpack")
    assert by_original[malformed[1][2]]["reason"] == (
        "schema_version: 9 is not a known version of the clicks contract (known: 1)")
    assert by_original[malformed[2][2]]["field"] in {"order_id", "content_id", "items"}
    assert by_original[malformed[4][2]]["field"] == "customer_id"
    assert "no time zone offset" in by_original[malformed[5][2]]["reason"]
    for letter in letters:
        assert letter["source_topic"].startswith(settings.topic_prefix)
        assert letter["partition"] >= 0
        assert letter["offset"] >= 0


async def test_redelivery_after_restart_is_recognised_as_duplicate(
    settings: Settings,
) -> None:
    first = build_worker(settings)
    await first.start()
    try:
        produce_raw(settings, [("clicks", b"c1", pack(click("e1")))])
        await eventually(lambda: first.accounting.applied == 1, 60, "first delivery applied")
    finally:
        await first.stop()

    # A fresh consumer group re-reads the topic from the start, as a redelivery
    # after a crash would; the store still remembers the event.
    second = build_worker(settings.with_(consumer_group=settings.consumer_group + "-again"))
    await second.start()
    try:
        await eventually(lambda: second.accounting.events_in == 1, 60, "redelivery consumed")
        assert (second.accounting.applied, second.accounting.duplicates) == (0, 1)
    finally:
        await second.stop()


async def test_a_flood_of_malformed_messages_ends_in_dead_letters(
    worker: Worker, settings: Settings
) -> None:
    config = TrafficConfig.ending_at(datetime.now(UTC), 1000, malformed_share=1.0,
                                     duplicate_share=0.0, catalogue_size=1, seed=11)
    flood = [m for m in TrafficGenerator(config).messages(1001) if m.malformed][:1000]
    assert len(flood) == 1000
    assert {m.malformed for m in flood} == set(MALFORMED_KINDS)
    produce_raw(settings, [(m.topic, m.key, m.value) for m in flood])
    await eventually(lambda: worker.accounting.events_in >= 1000, 90, "1000 malformed events")
    assert worker.accounting.dead_letters == 1000

    letters = [decode(m.value()) for m in consume_exactly(settings, "dead-letters", 1000)]
    assert sorted(letter["original"] for letter in letters) == sorted(m.value for m in flood)
    assert all(len(letter["reason"]) > 10 for letter in letters)

    # The worker is still consuming: a valid event after the flood is applied.
    produce_raw(settings, [("clicks", b"c1", pack(click("after-flood")))])
    await eventually(lambda: worker.accounting.applied == 1, 60, "the event after the flood")


async def test_an_event_the_core_fails_on_is_dead_lettered_and_the_batch_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a bug in the pure core on one unusual but valid event.
    real = profiles.handle

    def failing_on_poison(state: Any, record: Any, *args: Any, **kwargs: Any) -> Any:
        if record.event_id == "poison":
            raise ZeroDivisionError("boom")
        return real(state, record, *args, **kwargs)

    monkeypatch.setattr(profiles, "handle", failing_on_poison)
    running = build_worker(settings)
    await running.start()
    try:
        produce_raw(settings, [("clicks", b"c1", pack(click(e))) for e in ("e1", "poison", "e2")])
        await eventually(lambda: running.accounting.events_in >= 3, 60, "three events")
        assert (running.accounting.applied, running.accounting.dead_letters) == (2, 1)
        (letter,) = [decode(m.value()) for m in consume_exactly(settings, "dead-letters", 1)]
        assert letter["reason"].startswith("could not be applied (ZeroDivisionError: boom)")
        state = (await running.store.load_customers(["c1"], datetime.now(UTC)))["c1"]
        assert [h.event_id for h in state.history] == ["e1", "e2"]
    finally:
        await running.stop()


async def test_a_catalogue_tombstone_is_applied_not_dead_lettered(
    worker: Worker, settings: Settings, broker: EmbeddedBroker | KafkaServer
) -> None:
    item = {"event_id": "i1", "content_id": "n1", "schema_version": 1,
            "occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            "topics": ["fashion"], "channels": ["email"], "slots": ["newsletter-block"],
            "variants": [{"language": "de", "title": "Sommer", "url": "https://shop.example/n1"}],
            "default_language": "de"}
    produce_raw(settings, [("content", b"n1", pack(item))])
    await eventually(lambda: worker.catalogue is not None and "n1" in worker.catalogue.items,
                     60, "the item in the catalogue")
    produce_raw(settings, [("content", b"n1", None)])
    if isinstance(broker, KafkaServer):
        # Apache Kafka refuses a record without a key on a compacted topic itself.
        with pytest.raises(AssertionError, match="refused 1 message"):
            produce_raw(settings, [("content", None, None)])
        expected = (2, 0)
    else:  # the embedded broker takes it: the worker must dead-letter it
        produce_raw(settings, [("content", None, None)])
        expected = (2, 1)
    await eventually(lambda: worker.accounting.events_in >= sum(expected), 60, "the tombstones")
    assert (worker.accounting.applied, worker.accounting.dead_letters) == expected
    # The catalogue reader follows the topic on its own and converges on the deletion.
    catalogue = worker.catalogue
    assert catalogue is not None
    await eventually(lambda: "n1" not in catalogue.items, 30, "the item to be forgotten")


async def test_outputs_the_producer_failed_to_deliver_are_sent_again_before_the_ack(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their batch is not acknowledged until they are delivered: once
    acknowledged, Faust may commit its offsets, and nothing would bring them back."""
    config = TrafficConfig.ending_at(datetime.now(UTC), 600, customers=10, catalogue_size=5,
                                     malformed_share=0.0, duplicate_share=0.0, seed=5)
    messages = [(m.topic, m.key, m.value) for m in TrafficGenerator(config).messages(600)]
    produce_raw(settings, messages[:300])

    # The producer reports the first batch of outputs as not delivered (as when the
    # broker stays unreachable beyond the producer's timeouts); they never reach a topic.
    lost: list[tuple[str, bytes]] = []
    real_publish = ingest._publish

    async def first_delivery_fails(sent: Any) -> Any:
        if lost or not sent:
            return await real_publish(sent)
        lost.extend((topic.get_topic_name(), value) for topic, _, value, _ in sent)
        futures: list[asyncio.Future[Any]] = []
        for _ in sent:
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("broker unreachable"))
            futures.append(failed)
        return futures

    monkeypatch.setattr(ingest, "_publish", first_delivery_fails)
    worker = build_worker(settings)
    await worker.start()
    try:
        await eventually(lambda: bool(lost), 60, "a batch with outputs")
        produce_raw(settings, messages[300:])  # the batches that come next
        await eventually(lambda: worker.accounting.events_in == 600, 60, "every event")
    finally:
        await worker.stop()
    published = published_outputs(settings)
    assert {message: published[message] for message in lost} == dict.fromkeys(lost, 1)
    store = open_store(settings)
    await store.open()
    try:  # delivered the second time, so deleted from the outbox
        assert await store.unpublished(sorted(ledger(settings)), datetime.now(UTC)) == {}
    finally:
        await store.close()


async def test_outputs_a_worker_stored_but_never_delivered_are_published_on_redelivery(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrafficConfig.ending_at(datetime.now(UTC), 300, customers=10, catalogue_size=5,
                                     malformed_share=0.0, duplicate_share=0.0, seed=5)
    produce_raw(settings, [(m.topic, m.key, m.value) for m in
                           TrafficGenerator(config).messages(300)])

    # The first worker stores a batch with outputs, then stops dead before the
    # producer gets them: what a crash between the two looks like to the broker.
    stranded: list[tuple[str, bytes]] = []
    trace_headers: dict[bytes, list[tuple[str, bytes]]] = {}
    real_publish = ingest._publish

    async def dies_before_delivery(messages: Any) -> Any:
        if not messages:
            return await real_publish(messages)
        stranded.extend((topic.get_topic_name(), value) for topic, _, value, _ in messages)
        trace_headers.update((value, headers) for _, _, value, headers in messages)
        await asyncio.Future()  # never returns: the batch is never acknowledged

    monkeypatch.setattr(ingest, "_publish", dies_before_delivery)
    first = build_worker(settings.with_(shutdown_timeout_s=2.0))  # it waits for the hung batch
    await first.start()
    try:
        await eventually(lambda: bool(stranded), 60, "a batch with outputs")
    finally:
        await first.stop()
    monkeypatch.setattr(ingest, "_publish", real_publish)
    store = open_store(settings)
    await store.open()
    try:
        anchors = await store.unpublished(sorted(ledger(settings)), datetime.now(UTC))
    finally:
        await store.close()
    assert len(anchors) == 1, "the batch's outputs wait in the outbox"

    # Its events come again (a fresh group re-reads the topics, as after a crash):
    # they are duplicates now, and the stranded outputs are published from the outbox.
    second = build_worker(settings.with_(consumer_group=settings.consumer_group + "-again"))
    await second.start()
    try:
        await eventually(lambda: second.accounting.events_in == 300, 60, "the redelivery")
        assert second.accounting.duplicates > 0
    finally:
        await second.stop()
    published = published_outputs(settings)
    assert {message: published[message] for message in stranded} == dict.fromkeys(stranded, 1)
    # With the trace context they were stored with (each output's cause's trace).
    assert {m.value(): m.headers() for topic in OUTPUT_TOPICS
            for m in consume_all(settings, topic.name)
            if m.value() in trace_headers} == trace_headers
    # Delivered, so deleted from the outbox (at the latest as the worker stopped).
    await store.open()
    try:
        assert await store.unpublished(list(anchors), datetime.now(UTC)) == {}
    finally:
        await store.close()


async def test_a_dead_letter_the_producer_cannot_deliver_holds_the_batch_and_says_why(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = asyncio.Event()
    broken.set()
    attempts: list[int] = []
    real_publish = ingest._publish
    dead_letters = settings.topic("dead-letters")

    async def dead_letters_fail(sent: Any) -> Any:
        if not broken.is_set() or not any(topic.get_topic_name() == dead_letters
                                          for topic, *_ in sent):
            return await real_publish(sent)
        attempts.append(len(sent))
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(ConnectionError("broker unreachable"))
        return [failed] * len(sent)

    monkeypatch.setattr(ingest, "_publish", dead_letters_fail)
    worker = build_worker(settings.with_(commit_interval_s=0.1))
    await worker.start()
    try:
        produce_raw(settings, [("clicks", b"c1", pack(click("e1"))),
                               ("clicks", b"c1", b"\xc1 not msgpack")])
        await eventually(lambda: len(attempts) >= 3, 60, "three attempts")
        assert worker.ingest is not None
        blocked = worker.ingest.publish_blocked
        assert blocked is not None
        assert f"to {dead_letters} not delivered (ConnectionError: broker unreachable)" in blocked
        ready, checks = Monitor(worker).readiness()
        assert not ready
        assert checks["publishing"] == blocked
        # Held, not acknowledged: nothing of the batch is counted, no offset committed.
        assert worker.accounting.events_in == 0
        await asyncio.sleep(0.5)
        assert committed(settings, "clicks") == 0
        broken.clear()
        await eventually(lambda: worker.accounting.events_in == 2, 60, "the batch")
        assert worker.ingest.publish_blocked is None
        assert (worker.accounting.applied, worker.accounting.dead_letters) == (1, 1)
    finally:
        await worker.stop()
    (letter,) = [decode(m.value()) for m in consume_exactly(settings, "dead-letters", 1)]
    assert letter["original"] == b"\xc1 not msgpack"


def committed(settings: Settings, topic: str) -> int:
    """The consumer group's committed offsets of ``topic``, summed over its partitions."""
    consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                         "group.id": settings.consumer_group, "enable.auto.commit": False})
    try:
        name = settings.topic(topic)
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        offsets = consumer.committed([TopicPartition(name, p) for p in partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()
