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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from schemas.topics import INPUT_TOPICS
from streams.app import Worker, build_worker
from streams.errors import BrokerUnavailable, ReplayStalled
from streams.settings import Settings
from streams.store import open_store


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay will read: how many messages, from which offset of each partition."""

    messages: int
    start_offsets: dict[tuple[str, int], int]
    #: Messages read to make the plan (all of them, unless the broker found ``since``).
    scanned: int = 0


def plan_replay(settings: Settings, since: datetime | None = None, idle_s: float = 2.0
                ) -> ReplayPlan:
    """Count the messages to replay and find where each partition starts, by reading once.

    With ``since``, a partition starts at its first message whose Kafka
    timestamp is at or after ``since``.  The broker is asked first (offsets-
    for-times, a ListOffsets request by timestamp): Apache Kafka answers with
    that offset, or "none" when every message is older, and the plan reads
    only from there.  The embedded broker answers 0 whatever the time, which
    is a start before the right one, never after it, so reading on from the
    answer and skipping messages older than ``since`` is right on both.  The
    count comes from reading too (compacted topics have gaps between
    offsets): a raw consumer reads until nothing more arrives for ``idle_s``;
    at several hundred thousand messages a second that is a small part of a
    replay.
    """
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                         "group.id": f"relevanz-replay-probe-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    try:
        partitions = _input_partitions(consumer, settings)
        starts: dict[tuple[str, int], int] = {}
        ends: dict[tuple[str, int], int] = {}
        assignment = partitions
        if since_ms is not None and partitions:
            assignment = []
            asked = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in partitions]
            for found in consumer.offsets_for_times(asked, timeout=10):
                if found.offset >= 0:
                    assignment.append(TopicPartition(found.topic, found.partition, found.offset))
                    continue
                # Every message is older than `since`: the partition starts at its end.
                _, high = consumer.get_watermark_offsets(found, timeout=10)
                ends[(found.topic, found.partition)] = high
        consumer.assign(assignment)
        total, scanned, last_seen = 0, 0, time.monotonic()
        while assignment and time.monotonic() - last_seen < idle_s:
            arrived = [m for m in consumer.consume(10_000, 0.5) if m.error() is None]
            if arrived:
                last_seen = time.monotonic()
            scanned += len(arrived)
            for message in arrived:
                tp = (message.topic() or "", message.partition() or 0)
                offset = message.offset() or 0
                ends[tp] = offset + 1
                if tp in starts or since_ms is None or message.timestamp()[1] >= since_ms:
                    starts.setdefault(tp, offset)
                    total += 1
        for tp, end in ends.items():
            starts.setdefault(tp, end)  # nothing at or after `since`: start at the end
        return ReplayPlan(total, starts, scanned)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"broker {settings.broker_servers} not reachable: {exc.args[0]}") from exc
    finally:
        consumer.close()


def _input_partitions(consumer: Consumer, settings: Settings) -> list[TopicPartition]:
    """Every partition of the input topics the broker knows, from their beginning."""
    partitions = []
    for contract in INPUT_TOPICS:
        name = settings.topic(contract.name)
        metadata = consumer.list_topics(name, timeout=10).topics.get(name)
        if metadata is None or metadata.error is not None:
            continue
        partitions += [TopicPartition(name, p, OFFSET_BEGINNING) for p in metadata.partitions]
    return partitions


def _commit_start(settings: Settings, plan: ReplayPlan) -> None:
    """Make the replay's consumer group start at the planned offsets."""
    consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                         "group.id": settings.consumer_group, "enable.auto.commit": False})
    try:
        offsets = [TopicPartition(t, p, o) for (t, p), o in plan.start_offsets.items()]
        if offsets:
            consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        raise BrokerUnavailable(f"could not set the replay's start offsets: {exc.args[0]}"
                                ) from exc
    finally:
        consumer.close()


async def run_replay(settings: Settings, progress: Callable[[str], None],
                     since: datetime | None = None, stall_timeout_s: float = 60.0
                     ) -> dict[str, Any]:
    """Clear the projections and rebuild them (from ``since`` when given); returns counts."""
    plan = await asyncio.to_thread(plan_replay, settings, since)
    target = plan.messages
    replay_settings = settings.with_(
        consumer_group=f"{settings.consumer_group}-replay-{uuid.uuid4().hex[:12]}")
    if since is not None:
        await asyncio.to_thread(_commit_start, replay_settings, plan)
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
    return {**worker.accounting.as_dict(), "messages_replayed": target,
            "elapsed_s": round(elapsed, 3)}
