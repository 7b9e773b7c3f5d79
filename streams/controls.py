"""Operator controls: the kill switch and per-campaign pauses, shared by every worker.

The state lives on the compacted ``controls`` topic (record
:class:`~schemas.records.ControlChanged`, key ``all`` or
``campaign:<campaign_id>``): the latest record per key is in force.  Every
worker reads the topic whole when it starts, before it joins the consumer
group, and keeps following it, so a pause given through any worker's API
reaches all of them.  The API publishes a change, waits for the broker's
acknowledgement and applies it locally at once, so its answer already shows
the new state.

Ordering: a key always lands in the same partition, so per key the offset
orders the changes.  A worker applies a record only when its offset is higher
than that of the change it holds for the key; its own write, applied early,
is then not undone when the same record is read back, nor by an older record
read late.

Reading "to the end" at start uses the high watermark that fetch responses
carry (aiokafka's ``highwater``), not ListOffsets: the embedded broker answers
ListOffsets with the offset after the last *batch's first message*, which
would stop the read early.  Fetch responses carry the true end on both it and
Apache Kafka.

Only the API writes here, but a record that does not parse (whatever its
bytes: :func:`~schemas.validation.parse_record` raises nothing but
:class:`InvalidEvent`) is logged as an error and dead-lettered, and the
reader goes on: the compacted topic keeps it, so a reader that died on it
would die again on every start.  Every worker reads the topic whole, so each
publishes that dead letter once per start; the copies share their
``dead_letter_id`` (topic, partition, offset).

Enforcement is the trigger path's job: it asks :attr:`Controls.paused` and
:meth:`Controls.campaign_paused` before emitting a send trigger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.codec import encode
from schemas.dead_letters import dead_letter
from schemas.errors import InvalidEvent
from schemas.records import ControlChanged
from schemas.validation import parse_record
from streams.errors import BrokerUnavailable
from streams.following import keep_following
from streams.settings import Settings
from streams.tracing import Headers, carried, new_context

log = structlog.get_logger(__name__)

ALL = "all"
#: Largest message the controls producer sends (aiokafka's default limit, rounded down).
_MAX_PUBLISH_BYTES = 1_000_000


def campaign_control(campaign_id: str) -> str:
    """The control id (message key) of one campaign's pause.

    >>> campaign_control("spring")
    'campaign:spring'
    """
    return f"campaign:{campaign_id}"


@dataclass(frozen=True)
class Applied:
    """The change in force for one control, and where it was read."""

    record: ControlChanged
    partition: int
    offset: int


class Controls:
    """The pause state every worker follows, and the way operators change it."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime]):
        self.settings = settings
        self.clock = clock
        self.topic = settings.topic("controls")
        self._state: dict[str, Applied] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        #: Invalid records this worker dead-lettered.
        self.dead_letters = 0

    # --- what the trigger path asks --------------------------------------------

    @property
    def paused(self) -> bool:
        """True while the kill switch is on: no send trigger may go out."""
        applied = self._state.get(ALL)
        return applied is not None and bool(applied.record.paused)

    def campaign_paused(self, campaign_id: str) -> bool:
        """True when ``campaign_id`` may not send: it is paused, or everything is."""
        applied = self._state.get(campaign_control(campaign_id))
        return self.paused or (applied is not None and bool(applied.record.paused))

    @property
    def paused_campaigns(self) -> set[str]:
        """Campaigns paused one by one (the kill switch aside)."""
        return {str(a.record.campaign_id) for key, a in self._state.items()
                if key != ALL and a.record.paused and a.record.campaign_id}

    def as_dict(self) -> dict[str, Any]:
        """The state as plain data for the API: flags and the last change per control."""
        return {
            "paused": self.paused,
            "paused_campaigns": sorted(self.paused_campaigns),
            "changes": [
                {"control_id": key, "paused": bool(a.record.paused),
                 "campaign_id": a.record.campaign_id,
                 "changed_at": a.record.changed_at.isoformat(),
                 "changed_by": a.record.changed_by, "reason": a.record.reason}
                for key, a in sorted(self._state.items())
            ],
        }

    # --- changing it -------------------------------------------------------------

    async def change(self, *, paused: bool, changed_by: str, campaign_id: str | None = None,
                     reason: str | None = None) -> ControlChanged:
        """Publish a pause or resume (of everything, or of one campaign) and apply it here."""
        if self._producer is None:
            raise BrokerUnavailable("controls are not started; the worker is not running")
        record = ControlChanged(
            control_id=ALL if campaign_id is None else campaign_control(campaign_id),
            changed_at=self.clock(), schema_version=1, paused=paused,
            changed_by=changed_by, campaign_id=campaign_id, reason=reason or None)
        try:
            sent = await self._producer.send_and_wait(
                self.topic, encode(record), key=record.control_id.encode(),
                headers=new_context().headers())
        except KafkaError as exc:
            raise BrokerUnavailable(f"could not publish the control change to {self.topic}: "
                                    f"{exc}") from exc
        self._apply(record, sent.partition, sent.offset)
        log.info("control_changed", control_id=record.control_id, paused=paused,
                 changed_by=changed_by, reason=reason)
        return record

    # --- following the topic -----------------------------------------------------

    async def start(self, timeout_s: float = 60.0) -> None:
        """Read the whole topic, then keep following it; open the producer."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.broker_servers,
                                    group_id=None, enable_auto_commit=False)
        producer = self.new_producer()
        try:
            await consumer.start()
            await producer.start()
            self._consumer = consumer
            self._producer = producer  # dead-letters invalid records while loading
            await asyncio.wait_for(self._load(), timeout_s)
        except (KafkaError, TimeoutError) as exc:
            self._consumer = None
            self._producer = None
            await consumer.stop()
            await producer.stop()
            raise BrokerUnavailable(f"could not read the controls topic {self.topic}: "
                                    f"{exc or type(exc).__name__}") from exc
        self._task = asyncio.create_task(self._follow())
        log.info("controls_loaded", paused=self.paused,
                 paused_campaigns=sorted(self.paused_campaigns))

    def new_producer(self) -> AIOKafkaProducer:
        """The (unstarted) producer control changes are sent with."""
        return AIOKafkaProducer(bootstrap_servers=self.settings.broker_servers, acks="all",
                                enable_idempotence=self.settings.idempotent_producers)

    async def _load(self) -> None:
        await self._catch_up(await self._assign_all())

    async def _assign_all(self) -> list[TopicPartition]:
        """Assign every partition of the topic, read from the beginning."""
        assert self._consumer is not None
        # Just created, the topic may not be in the client's metadata yet: tracking
        # it (by assigning one partition) makes the client fetch it.  A worker that
        # followed no partition would miss every pause, so wait rather than go on.
        self._consumer.assign([TopicPartition(self.topic, 0)])
        while not (partitions := self._consumer.partitions_for_topic(self.topic)):
            await asyncio.sleep(0.1)
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_beginning(*assigned)
        return assigned

    async def _catch_up(self, assigned: list[TopicPartition]) -> None:
        assert self._consumer is not None
        pending = set(assigned)
        while pending:
            await self._read_once()
            for tp in list(pending):
                end = self._consumer.highwater(tp)  # None until a fetch answered for tp
                if end is not None and await self._consumer.position(tp) >= end:
                    pending.discard(tp)

    async def _follow(self) -> None:
        await keep_following(self._read_once, log, "controls")

    async def _read_once(self) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=500, max_records=1000)
        for tp, messages in batches.items():
            for message in messages:
                if message.value is None:  # a tombstone: the control is back to default
                    if message.key is not None:
                        self._state.pop(message.key.decode(errors="replace"), None)
                    continue
                try:
                    record = parse_record(ControlChanged, message.value)
                except InvalidEvent as exc:
                    # Only our API writes here; say so loudly, but keep the others.
                    log.error("control_record_invalid", partition=tp.partition,
                              offset=message.offset, error=str(exc)[:500])
                    await self._dead_letter(tp.partition, message.offset, message.key,
                                            message.value, exc, carried(message.headers))
                    continue
                assert isinstance(record, ControlChanged)
                self._apply(record, tp.partition, message.offset)

    async def _dead_letter(self, partition: int, offset: int, key: bytes | None,
                           value: bytes, error: InvalidEvent, headers: Headers) -> None:
        if self._producer is None:
            return
        letter = dead_letter(source_topic=self.topic, partition=partition, offset=offset,
                             key=key, value=value, reason=str(error), field=error.field,
                             received_at=self.clock(), max_bytes=_MAX_PUBLISH_BYTES)
        try:
            await self._producer.send_and_wait(self.settings.topic("dead-letters"),
                                               encode(letter), key=letter.original_key,
                                               headers=headers)
        except KafkaError as exc:  # logged above; the next start tries again
            log.error("control_dead_letter_not_published", partition=partition,
                      offset=offset, error=str(exc))
        else:
            self.dead_letters += 1

    def _apply(self, record: ControlChanged, partition: int, offset: int) -> None:
        known = self._state.get(record.control_id)
        if known is None or known.partition != partition or known.offset < offset:
            self._state[record.control_id] = Applied(record, partition, offset)

    async def stop(self) -> None:
        """Stop following the topic and close the producer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()
        self._consumer = None
        self._producer = None
