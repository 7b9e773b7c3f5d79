"""Test harness: real embedded broker, real store, deadlines instead of sleeps."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from schemas.records import PURPOSES
from streams.settings import Settings

#: Bootstrap addresses of the embedded (Tansu) brokers running now: the ``broker``
#: fixture (tests/conftest.py) adds each one it starts and removes it on stop.
EMBEDDED_BROKERS: set[str] = set()


#: ``(session timeout, heartbeat)`` in seconds for consumer groups on Tansu and on Kafka.
#: Tansu holds a new group's first join for about half the session timeout (3 s at
#: 6 s, 1 s at 2 s, measured), and every worker a test starts pays it once.  Kafka
#: joins at once (``group.initial.rebalance.delay.ms=0``) but refuses a session
#: timeout below its ``group.min.session.timeout.ms`` of 6 s.
TANSU_GROUP_TIMEOUTS = (2.0, 0.5)
KAFKA_GROUP_TIMEOUTS = (6.0, 1.0)


def group_timeouts(servers: str) -> tuple[float, float]:
    """``(session timeout, heartbeat)`` in seconds for consumer groups on ``servers``."""
    return TANSU_GROUP_TIMEOUTS if servers in EMBEDDED_BROKERS else KAFKA_GROUP_TIMEOUTS


def group_env(servers: str | None = None) -> dict[str, str]:
    """:func:`group_timeouts` as the environment of a ``relevanz`` process; ``None``
    for a command that starts an embedded broker of its own (demo, bench, evaluate)."""
    session_timeout_s, heartbeat_s = (
        TANSU_GROUP_TIMEOUTS if servers is None else group_timeouts(servers))
    return {"RELEVANZ_SESSION_TIMEOUT_S": f"{session_timeout_s:g}",
            "RELEVANZ_HEARTBEAT_S": f"{heartbeat_s:g}"}


def isolated_settings(servers: str, data_dir: Path, **changes: object) -> Settings:
    """Settings with a topic prefix and consumer group of their own on a shared broker.

    Every purpose counts as granted unless a test says otherwise
    (``consent_default=frozenset()`` is the shipped, strict default): most
    tests are about something else than consent.
    """
    tag = uuid.uuid4().hex[:8]
    session_timeout_s, heartbeat_s = group_timeouts(servers)
    base = Settings(
        broker_servers=servers,
        store_url=f"embedded:{data_dir / 'store.db'}",
        topic_prefix=f"t{tag}.",
        consumer_group=f"relevanz-test-{tag}",
        session_timeout_s=session_timeout_s,
        heartbeat_s=heartbeat_s,
        commit_interval_s=0.2,
        consent_default=frozenset(PURPOSES),
        # The embedded broker fails aiokafka's InitProducerId (see the setting's help).
        idempotent_producers=False,
    )
    return base.with_(**changes)


async def eventually(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait until ``predicate()`` holds, failing with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout_s: float,
                           what: str, poll_s: float = 1.0) -> None:
    """:func:`eventually` for a check that must itself await (e.g. read the store)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(poll_s)


def produce_raw(settings: Settings, messages: list[tuple[str, bytes | None, bytes | None]]
                ) -> None:
    """Publish ``(logical topic, key, value)`` triples as they are, bytes untouched."""
    producer = Producer({"bootstrap.servers": settings.broker_servers, "acks": "all"})
    refused: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            refused.append(f"{message.topic()}: {error.str()}")

    for topic, key, value in messages:
        producer.produce(settings.topic(topic), key=key, value=value, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages left unconfirmed"
    assert not refused, f"the broker refused {len(refused)} message(s): {refused[0]}"


def consume_exactly(settings: Settings, topic: str, n: int, timeout_s: float = 60.0
                    ) -> list[Message]:
    """Read ``n`` messages of logical ``topic`` from the beginning, and check no more come.

    Partitions are assigned explicitly: a consumer group would first wait for
    the broker's join round (seconds on the embedded broker), with no benefit.
    """
    consumer = Consumer({
        "bootstrap.servers": settings.broker_servers,
        "group.id": f"reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
    })
    name = settings.topic(topic)
    partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            # No more than are missing: consume() returns as soon as it has them,
            # rather than waiting out its timeout for 500 (extras: see below).
            for message in consumer.consume(min(500, n - len(got)), 0.5):
                assert message.error() is None, message.error()
                got.append(message)
        # A short grace period to catch extra messages that should not exist.
        extra_deadline = time.monotonic() + 1.0
        while time.monotonic() < extra_deadline:
            got.extend(m for m in consumer.consume(500, 0.2) if m.error() is None)
    finally:
        consumer.close()
    assert len(got) == n, f"expected {n} messages on {topic}, got {len(got)}"
    return got


def consume_all(settings: Settings, topic: str, at_least: int = 0, timeout_s: float = 60.0
                ) -> list[Message]:
    """Every message of logical ``topic`` up to its end (its high watermarks), once it
    holds at least ``at_least``: no waiting for silence, nothing missed before the end."""
    consumer = Consumer({
        "bootstrap.servers": settings.broker_servers,
        "group.id": f"reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
    })
    name = settings.topic(topic)
    deadline = time.monotonic() + timeout_s
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        got: list[Message] = []
        while True:
            end = sum(consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                      for p in partitions)
            while len(got) < end:
                assert time.monotonic() < deadline, f"{topic}: read {len(got)} of {end}"
                for message in consumer.consume(500, 0.5):
                    assert message.error() is None, message.error()
                    got.append(message)
            if len(got) >= at_least:
                return got
            assert time.monotonic() < deadline, (
                f"expected at least {at_least} messages on {topic}, got {len(got)}")
            time.sleep(0.2)
    finally:
        consumer.close()
