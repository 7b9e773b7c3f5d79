"""The content catalogue, read whole by every worker.

The ``content`` topic is compacted and keyed by ``content_id``.  Customer
topics are split between workers by partition, but every worker needs every
catalogue item (a click on any item must map to that item's topics), so each
worker reads all content partitions itself, outside the consumer group, and
keeps the latest valid item per id.  :meth:`Catalogue.start` returns once the
reader has caught up with what the topic held, so a starting worker never
processes clicks against a half-read catalogue.  Invalid items are skipped
here (:func:`~schemas.validation.parse_message` raises nothing but
:class:`InvalidEvent`, whatever the bytes); the ingest agent, which reads
the topic too, dead-letters them.  The reader never stops on a message:
the compacted topic keeps a bad one, so a reader that died on it would die
again on every start.  The items are held in a
:class:`~agents.core.catalogue.CatalogueIndex`, so a decision reads only the
items of its channel and slot or topic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.core.catalogue import CatalogueIndex
from schemas.errors import InvalidEvent
from schemas.records import ContentPublished
from schemas.validation import Limits, parse_message
from streams.errors import BrokerUnavailable
from streams.following import keep_following
from streams.settings import Settings

log = structlog.get_logger(__name__)


async def _all_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``, once the client's metadata knows them.

    The client starts with metadata for no topic (Apache Kafka answers an
    empty topic list with none; the embedded broker with all of them):
    tracking the topic, by assigning one partition, makes the client fetch it.
    """
    consumer.assign([TopicPartition(topic, 0)])
    while not (partitions := consumer.partitions_for_topic(topic)):
        await asyncio.sleep(0.05)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


class Catalogue:
    """Latest :class:`ContentPublished` per ``content_id``, kept current in the background."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime], limits: Limits):
        self.settings = settings
        self.clock = clock
        self.limits = limits
        self.items = CatalogueIndex()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def topics_of(self, content_id: str) -> list[str] | None:
        """Topics of a catalogue item, or None for an unknown item."""
        item = self.items.get(content_id)
        return list(item.topics) if item is not None else None

    def forget(self, content_id: str) -> None:
        """Drop an item (its tombstone was consumed)."""
        self.items.forget(content_id)

    def learn(self, item: ContentPublished) -> None:
        """Take an item unless a newer version (by event time) is already known."""
        self.items.learn(item)

    async def start(self, timeout_s: float = 60.0) -> None:
        """Read the topic up to its current end, then keep following it."""
        name = self.settings.topic("content")
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.broker_servers,
                                    group_id=None, enable_auto_commit=False)
        try:
            await consumer.start()
            assigned = await asyncio.wait_for(_all_partitions(consumer, name), timeout_s)
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await consumer.end_offsets(assigned)
            self._consumer = consumer
            await asyncio.wait_for(self._catch_up(ends), timeout_s)
        except (KafkaError, TimeoutError) as exc:
            await consumer.stop()
            raise BrokerUnavailable(f"could not read the content catalogue {name}: {exc}"
                                    ) from exc
        self._task = asyncio.create_task(self._follow())
        log.info("catalogue_loaded", items=len(self.items))

    async def _catch_up(self, ends: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        pending = {tp: end for tp, end in ends.items() if end > 0}
        while pending:
            await self._read_once()
            for tp in list(pending):
                if await self._consumer.position(tp) >= pending[tp]:
                    del pending[tp]

    async def _follow(self) -> None:
        await keep_following(self._read_once, log, "catalogue")

    async def _read_once(self) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=500, max_records=1000)
        now = self.clock()
        for messages in batches.values():
            for message in messages:
                if message.value is None:  # a tombstone removes the item
                    if message.key is not None:
                        self.forget(message.key.decode(errors="replace"))
                    continue
                try:
                    item = parse_message("content", message.key, message.value, now=now,
                                         limits=self.limits)
                except InvalidEvent:  # the only error it raises, whatever the bytes
                    continue  # the ingest agent dead-letters it
                assert isinstance(item, ContentPublished)
                self.learn(item)

    async def stop(self) -> None:
        """Stop following the topic."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
