"""``relevanz replay``: rebuild every projection in the store from the topics.

Kafka topics are the source of truth; the store holds projections of them.
Replay clears the store's customer projections and event ledger, reads every
input topic from the beginning with a consumer group of its own, and applies
each event exactly as live processing does (same validation, same pure core,
same event-time logic), without publishing outputs again.  It stops once it
has consumed every message that was in the topics when it started.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from schemas.topics import INPUT_TOPICS
from streams.app import Worker, build_worker
from streams.errors import BrokerUnavailable, RelevanzError
from streams.settings import Settings
from streams.store import open_store


class ReplayStalled(RelevanzError):
    """Replay stopped making progress before it reached the end of the topics."""


def messages_in_topics(settings: Settings, idle_s: float = 2.0) -> int:
    """How many messages the input topics hold right now, counted by reading them once.

    Counting from high watermarks would be cheaper, but the embedded broker
    reports them wrongly (one per produced batch), so a raw consumer reads
    every partition from the beginning until nothing more arrives for
    ``idle_s``; at several hundred thousand messages a second that is a
    small part of a replay.
    """
    consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                         "group.id": f"relevanz-replay-probe-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    try:
        assignment = []
        for contract in INPUT_TOPICS:
            name = settings.topic(contract.name)
            metadata = consumer.list_topics(name, timeout=10).topics.get(name)
            if metadata is None or metadata.error is not None:
                continue
            assignment += [TopicPartition(name, p, OFFSET_BEGINNING)
                           for p in metadata.partitions]
        consumer.assign(assignment)
        total, last_seen = 0, time.monotonic()
        while time.monotonic() - last_seen < idle_s:
            arrived = [m for m in consumer.consume(10_000, 0.5) if m.error() is None]
            if arrived:
                total += len(arrived)
                last_seen = time.monotonic()
        return total
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"broker {settings.broker_servers} not reachable: {exc.args[0]}") from exc
    finally:
        consumer.close()


async def run_replay(settings: Settings, progress: Callable[[str], None],
                     stall_timeout_s: float = 60.0) -> dict[str, Any]:
    """Clear the projections and rebuild them; returns the counts."""
    target = await asyncio.to_thread(messages_in_topics, settings)
    replay_settings = settings.with_(
        consumer_group=f"{settings.consumer_group}-replay-{int(time.time())}")
    store = open_store(settings)
    await store.open()
    try:
        await store.reset()
    finally:
        await store.close()
    worker: Worker = build_worker(replay_settings, emit=False)
    progress(f"replaying {target} messages into {settings.store_url}")
    started = time.monotonic()
    await worker.start()
    try:
        last, last_change, last_report = -1, time.monotonic(), 0.0
        while worker.accounting.events_in < target:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if worker.accounting.events_in != last:
                last, last_change = worker.accounting.events_in, now
            elif now - last_change > stall_timeout_s:
                raise ReplayStalled(
                    f"replay consumed {last} of {target} messages and made no progress for "
                    f"{stall_timeout_s:g}s")
            if now - last_report >= 2.0:
                progress(f"replayed {worker.accounting.events_in}/{target}")
                last_report = now
    finally:
        await worker.stop()
    elapsed = time.monotonic() - started
    return {**worker.accounting.as_dict(), "messages_in_topics": target,
            "elapsed_s": round(elapsed, 3)}
