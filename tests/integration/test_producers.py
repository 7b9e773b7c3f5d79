"""Every producer of the project is Kafka's idempotent producer, checked on the real broker.

A retried send of an idempotent producer carries its producer id and sequence
number, so the broker writes it once and in order.  librdkafka's (``relevanz
produce``, the demo's traffic) gets a producer id from the embedded broker;
aiokafka's (Faust's outputs, the controls) asks with InitProducerId version
0, which the embedded broker answers with an error, so there the setting is
off (the last test keeps that limitation in sight).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from confluent_kafka import Producer

from streams.app import build_faust_app, utc_now
from streams.broker import EmbeddedBroker
from streams.controls import Controls
from streams.idempotent_faust import IdempotentProducer
from streams.publish import Publisher
from streams.settings import Settings
from tests.harness import consume_exactly, isolated_settings


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    # Production's default, which the harness turns off for the embedded broker.
    return isolated_settings(broker.bootstrap_servers, tmp_path, idempotent_producers=True)


def test_the_default_is_idempotent() -> None:
    assert Settings.from_env({}).idempotent_producers is True


def test_relevanz_produce_gets_a_producer_id_from_the_broker(settings: Settings) -> None:
    publisher = Publisher(settings)
    assert publisher.config["enable.idempotence"] is True
    assert publisher.config["acks"] == "all"
    for n in range(3):
        publisher.send("clicks", b"c1", json.dumps({"n": n}).encode())
    report = publisher.flush(30)
    assert (report.delivered, report.failed) == (3, 0)
    assert [json.loads(m.value())["n"] for m in consume_exactly(settings, "clicks", 3)] == [
        0, 1, 2]

    # The same configuration, with librdkafka's statistics: the broker assigned an id.
    stats: list[dict[str, Any]] = []
    probe = Producer({**publisher.config, "statistics.interval.ms": 100,
                      "stats_cb": lambda raw: stats.append(json.loads(raw))})
    probe.produce(settings.topic("clicks"), key=b"c2", value=b"{}")
    assert probe.flush(30) == 0
    for _ in range(50):
        probe.poll(0.1)
        if stats and stats[-1]["eos"]["idemp_state"] == "Assigned":
            break
    assert stats[-1]["eos"]["idemp_state"] == "Assigned"
    assert stats[-1]["eos"]["producer_id"] >= 0


def _idempotent(producer: AIOKafkaProducer) -> bool:
    # aiokafka keeps a transaction manager (producer id, sequence numbers) only then.
    return producer._txn_manager is not None


async def test_the_workers_output_producer_is_idempotent(settings: Settings) -> None:
    faust_producer = build_faust_app(settings).producer
    assert isinstance(faust_producer, IdempotentProducer)
    client = faust_producer._new_producer()
    assert _idempotent(client)
    assert client.client._bootstrap_servers == settings.broker_servers.split(",")

    off = build_faust_app(settings.with_(idempotent_producers=False)).producer
    assert not isinstance(off, IdempotentProducer)
    assert not _idempotent(off._new_producer())


async def test_the_controls_producer_is_idempotent(settings: Settings) -> None:
    assert _idempotent(Controls(settings, utc_now).new_producer())
    off = Controls(settings.with_(idempotent_producers=False), utc_now).new_producer()
    assert not _idempotent(off)


async def test_the_embedded_broker_still_refuses_aiokafkas_producer_id(
    settings: Settings,
) -> None:
    """Why the embedded broker runs with the setting off; when this fails, drop that."""
    producer = Controls(settings, utc_now).new_producer()
    try:
        with pytest.raises(KafkaError):
            # A worker would not start: its controls raise BrokerUnavailable.
            await asyncio.wait_for(producer.start(), 30)
    finally:
        await producer.stop()
