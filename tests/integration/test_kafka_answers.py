"""What Apache Kafka answers about offsets, which the embedded broker answers wrongly.

The worker's lag (``streams/api/status.py``) and ``relevanz replay --since``
(``streams/cli/replay.py``) are written so that they are right on the embedded
broker, whose high watermarks, ListOffsets and offsets-for-times answers are
off.  These tests pin down that Apache Kafka's answers are the truth, so
that the readings the worker takes from it are right as they are.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.topics import INPUT_TOPICS
from streams.servers.kafka import KafkaServer
from streams.settings import Settings
from streams.topics import (
    KAFKA_DEFAULT_MESSAGE_BYTES,
    RECORD_HEADROOM_BYTES,
    ensure_topics,
    input_limit_warnings,
    message_limit,
    message_limits,
)
from tests.harness import isolated_settings

pytestmark = pytest.mark.brokers("kafka")


@pytest.fixture
def settings(broker: KafkaServer, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path)


def _produce_batches(settings: Settings, topic: str, stamps_ms: list[int]) -> None:
    """One message per stamp, in several producer batches, all to partition 0."""
    producer = Producer({"bootstrap.servers": settings.broker_servers, "acks": "all",
                         "linger.ms": 50})
    for i, stamp in enumerate(stamps_ms):
        producer.produce(topic, value=b"x", partition=0, timestamp=stamp)
        if i % 7 == 6:
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0


def test_high_watermark_and_offsets_for_times_are_exact(settings: Settings) -> None:
    topic = settings.topic(f"answers-{uuid.uuid4().hex[:6]}")
    # Recent times: older than the topic's retention (7 days) Kafka may drop them.
    base = int(time.time() * 1000) - 100_000
    stamps = [base + 1000 * i for i in range(30)]
    _produce_batches(settings, topic, stamps)
    consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                         "group.id": f"answers-{uuid.uuid4().hex[:6]}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert (low, high) == (0, 30)  # the embedded broker answers less than 30
        for index in (0, 1, 13, 29):
            found = consumer.offsets_for_times([TopicPartition(topic, 0, stamps[index])],
                                               timeout=10)
            assert found[0].offset == index  # the embedded broker answers 0
        # Between two stamps: the first message at or after the time.
        found = consumer.offsets_for_times([TopicPartition(topic, 0, stamps[13] + 1)],
                                           timeout=10)
        assert found[0].offset == 14
    finally:
        consumer.close()


def test_input_topics_take_the_largest_admitted_event_and_the_limits_are_read_back(
    broker: KafkaServer, tmp_path: Path
) -> None:
    large = isolated_settings(broker.bootstrap_servers, tmp_path / "large",
                              max_event_bytes=16 * 1024 * 1024)
    ensure_topics(large)
    limits = message_limits(large, ["clicks", "content", "dead-letters"])
    wanted = 16 * 1024 * 1024 + RECORD_HEADROOM_BYTES
    # Input topics, the compacted one included, are created to take the limit;
    # the dead letters keep the broker's default (they carry a bounded prefix).
    assert limits == {"clicks": wanted, "content": wanted,
                      "dead-letters": KAFKA_DEFAULT_MESSAGE_BYTES}
    assert message_limit(large, "purchases") == wanted
    assert input_limit_warnings(large, limits) == []

    # A topic that exists with Kafka's default is named at start, with the fix.
    small = isolated_settings(broker.bootstrap_servers, tmp_path / "small")
    ensure_topics(small)
    assert message_limit(small, "clicks") == KAFKA_DEFAULT_MESSAGE_BYTES
    names = [t.name for t in INPUT_TOPICS]
    assert input_limit_warnings(small, message_limits(small, names)) == []  # 64 KiB events
    raised = small.with_(max_event_bytes=4 * 1024 * 1024)
    warnings = input_limit_warnings(raised, message_limits(raised, names))
    assert len(warnings) == len(names)
    assert all("raise the topic's max.message.bytes" in line for line in warnings)
    assert message_limit(small, "no-such-topic") is None
