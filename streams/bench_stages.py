"""The stages ``relevanz bench`` measures, each reading the same published events.

- :func:`measure_raw`: a confluent-kafka consumer decoding every value, the limit;
- :func:`measure_faust`: a bare Faust agent decoding every value, the framework
  ceiling (the worker's Faust settings, :func:`streams.app.build_faust_app`);
- :func:`measure_pipeline`: the worker as :func:`streams.app.build_worker`
  wires it, on a fresh embedded store, then optionally its latency at a fixed
  offered load, published from another process as upstream systems would.

Each stage has a consumer group of its own, so each reads everything from the
start, and counts from the first event it consumes to the last, so the group
join is left out.  The worker has no batch hook yet, so :class:`BatchClock`
observes ingest through the store's ``seen_events`` (a batch starts) and the
worker's ``Accounting.count_batch`` (the batch is handled).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException

from agents.core.accounting import Accounting
from schemas.codec import decode
from schemas.errors import InvalidEvent
from schemas.topics import INPUT_TOPICS
from streams.app import build_faust_app, build_worker
from streams.errors import BrokerUnavailable, RelevanzError
from streams.publish import Publisher
from streams.settings import Settings
from streams.store import EventKey
from streams.store.embedded import EmbeddedStore
from streams.topics import ensure_topics
from streams.traffic import Message

Progress = Callable[[str], None]


class BenchStalled(RelevanzError):
    """A stage stopped consuming before it had read every published event."""


@dataclass(frozen=True)
class Throughput:
    """Events a stage consumed and the time from its first event to its last."""

    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Events per second (0 when nothing was timed)."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Meter:
    """Counts one stage's events; :meth:`begin` marks the first batch's arrival."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.first_at: float | None = None
        self.done_at: float | None = None

    def begin(self) -> None:
        """Call when data arrives, before handling it; only the first call counts."""
        if self.first_at is None:
            self.first_at = time.perf_counter()

    def add(self, k: int) -> None:
        """Call after handling ``k`` events."""
        self.count += k
        if self.done_at is None and self.count >= self.target:
            self.done_at = time.perf_counter()

    def result(self) -> Throughput:
        """The throughput once the target is reached."""
        assert self.first_at is not None, "no event consumed"
        assert self.done_at is not None, "target not reached"
        return Throughput(self.count, self.done_at - self.first_at)


class BatchClock:
    """Notes when the ingest agent starts each batch and when it has handled it.

    A stand-in for a batch hook the worker does not offer yet.  Ingest asks
    the store which of a batch's event_ids it has seen first
    (:meth:`Store.seen_events`) and counts the batch in the worker's
    :class:`Accounting` last, one batch at a time, so the keys of the latest
    ``seen_events`` call belong to the batch being counted.
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        #: event_id -> wall time its batch was handled, once :meth:`watch` is called.
        self.handled: dict[str, float] | None = None
        self._batch: Sequence[EventKey] = ()

    def watch(self) -> dict[str, float]:
        """Start noting handled times; returns the mapping being filled."""
        self.handled = {}
        return self.handled

    def started(self, keys: Sequence[EventKey]) -> None:
        """A batch with these valid events began."""
        self.meter.begin()
        self._batch = keys

    def counted(self) -> None:
        """The batch is handled: applied, recorded, its outputs and dead letters sent."""
        if self.handled is not None:
            at = time.time()  # wall time: the publisher runs in another process
            for _, event_id in self._batch:
                self.handled.setdefault(event_id, at)
        self._batch = ()

    def attach(self, accounting: Accounting) -> None:
        """Call :meth:`counted` after every ``accounting.count_batch``."""
        count_batch = accounting.count_batch

        def count_and_stamp(**counts: int) -> None:
            count_batch(**counts)
            self.counted()

        accounting.count_batch = count_and_stamp  # type: ignore[method-assign] # no batch hook yet


class TimedStore(EmbeddedStore):
    """The embedded store, telling a :class:`BatchClock` when a batch begins."""

    def __init__(self, path: Path, clock: BatchClock) -> None:
        super().__init__(path)
        self.clock = clock

    async def seen_events(self, keys: Sequence[EventKey], now: datetime) -> set[EventKey]:
        self.clock.started(keys)
        return await super().seen_events(keys, now)


def publish(settings: Settings, messages: Sequence[Message]) -> None:
    """Create the topics and publish ``messages``, waiting for every confirmation."""
    ensure_topics(settings)
    publisher = Publisher(settings)
    for m in messages:
        publisher.send(m.topic, m.key, m.value)
    report = publisher.flush()
    if report.failed:
        raise BrokerUnavailable(f"{report.failed} of {len(messages)} events were not "
                                f"delivered to the embedded broker: {report.errors}")


async def wait_for(label: str, count: Callable[[], int], target: int, progress: Progress,
                   stall_timeout_s: float, idle: str = "joining the consumer group") -> float:
    """Wait until ``count()`` reaches ``target``, reporting each second; returns the time."""
    last_count, last_change, last_report = -1, time.perf_counter(), 0.0
    while True:
        now, seen = time.perf_counter(), count()
        if seen >= target:
            return now
        if seen != last_count:
            last_count, last_change = seen, now
        elif now - last_change > stall_timeout_s:
            raise BenchStalled(f"{label}: only {seen} of {target} events consumed; "
                               f"no progress for {stall_timeout_s:g}s")
        if now - last_report >= 1.0:
            state = f"{seen}/{target} events" if seen else idle
            progress(f"{label}: {state}")
            last_report = now
        await asyncio.sleep(0.01)


def _decode_all(values: Sequence[bytes | None]) -> int:
    """Decode every value as the worker would; returns how many were not decodable."""
    bad = 0
    for value in values:
        try:
            decode(value or b"")
        except InvalidEvent:  # malformed on purpose: trying to decode it is the work
            bad += 1
    return bad


async def measure_raw(settings: Settings, n: int, progress: Progress,
                      stall_timeout_s: float) -> Throughput:
    """A confluent-kafka consumer decoding every event: the limit on this machine."""
    meter, stop = Meter(n), threading.Event()
    topics = [settings.topic(t.name) for t in INPUT_TOPICS]

    def consume() -> None:
        consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                             "group.id": f"{settings.consumer_group}-raw",
                             "auto.offset.reset": "earliest",
                             "session.timeout.ms": int(settings.session_timeout_s * 1000),
                             "heartbeat.interval.ms": int(settings.heartbeat_s * 1000)})
        try:
            consumer.subscribe(topics)
            while meter.count < n and not stop.is_set():
                batch = consumer.consume(1000, 0.2)
                if batch:
                    meter.begin()
                    for message in batch:
                        if message.error() is not None:
                            raise BrokerUnavailable(f"raw consumer: {message.error()}")
                    _decode_all([m.value() for m in batch])
                    meter.add(len(batch))
        except KafkaException as exc:
            raise BrokerUnavailable(f"raw consumer: {exc.args[0]}") from exc
        finally:
            consumer.close()

    consuming = asyncio.create_task(asyncio.to_thread(consume))
    watching = asyncio.create_task(wait_for("raw", lambda: meter.count, n, progress,
                                            stall_timeout_s))
    try:
        await asyncio.wait({consuming, watching}, return_when=asyncio.FIRST_COMPLETED)
        if not consuming.done():
            await watching  # raises BenchStalled when the consumer stops making progress
        await consuming  # raises the consumer's error; it returns once it has read n
        if meter.count < n:
            raise BenchStalled(f"raw: consumer ended after {meter.count} of {n} events")
    finally:
        stop.set()
        watching.cancel()
        await asyncio.gather(consuming, watching, return_exceptions=True)
    return meter.result()


async def measure_faust(settings: Settings, n: int, progress: Progress,
                        stall_timeout_s: float) -> Throughput:
    """A bare Faust agent decoding every event: the framework's ceiling."""
    app = build_faust_app(settings.with_(consumer_group=f"{settings.consumer_group}-faust"))
    inputs = app.topic(*(settings.topic(t.name) for t in INPUT_TOPICS), key_type=bytes,
                       value_type=bytes, key_serializer="raw", value_serializer="raw")
    meter = Meter(n)

    @app.agent(inputs, name="bench-decode")
    async def decode_each(stream: Any) -> None:
        async for value in stream:
            meter.begin()
            _decode_all([value])
            meter.add(1)

    await app.start()
    try:
        await wait_for("faust", lambda: meter.count, n, progress, stall_timeout_s)
    finally:
        await app.stop()
    return meter.result()


@dataclass(frozen=True)
class Latency:
    """Event-to-applied latency at a fixed offered load."""

    offered_per_s: float
    applied_per_s: float  # below offered_per_s: the pipeline fell behind
    events: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class PipelineResult:
    """The full pipeline's throughput, what it ran, and its latency if measured."""

    throughput: Throughput
    agents: list[str]
    latency: Latency | None


async def measure_pipeline(settings: Settings, n: int, store_path: Path, progress: Progress,
                           stall_timeout_s: float,
                           fresh: Callable[[int], list[Message]] | None = None,
                           latency_s: float = 10.0) -> PipelineResult:
    """The worker as deployed, on a fresh embedded store.

    With ``fresh`` (the next k unpublished messages of the same stream), the
    latency at half the measured maximum follows for ``latency_s`` seconds.
    """
    for stale in store_path.parent.glob(f"{store_path.name}*"):
        stale.unlink()  # a ledger of another run would turn events into duplicates
    settings = settings.with_(consumer_group=f"{settings.consumer_group}-pipeline",
                              store_url=f"embedded:{store_path}")
    meter = Meter(n)
    clock = BatchClock(meter)
    worker = build_worker(settings, store=TimedStore(store_path, clock))
    clock.attach(worker.accounting)
    agents = sorted(agent.name.rsplit(".", 1)[-1] for agent in worker.app.agents.values())
    await worker.start()
    try:
        done_at = await wait_for("pipeline", lambda: worker.accounting.events_in, n, progress,
                                 stall_timeout_s)
        assert meter.first_at is not None
        throughput = Throughput(worker.accounting.events_in, done_at - meter.first_at)
        latency = None
        if fresh is not None:
            offered = throughput.events_per_s / 2
            messages = fresh(max(1, min(n, math.ceil(offered * latency_s))))
            progress(f"latency: {len(messages)} fresh events at {offered:,.0f} events/s "
                     f"(half the pipeline's maximum)")
            latency = await _latency(settings, worker.accounting, clock, messages, offered,
                                     n, progress, stall_timeout_s)
    finally:
        await worker.stop()
    return PipelineResult(throughput, agents, latency)


async def _latency(settings: Settings, accounting: Accounting, clock: BatchClock,
                   messages: list[Message], rate: float, already: int, progress: Progress,
                   stall_timeout_s: float) -> Latency:
    handled = clock.watch()
    # Upstream systems publish from other processes; a thread here would take the
    # worker's interpreter lock and measure the benchmark, not the pipeline.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        publishing = asyncio.get_running_loop().run_in_executor(
            pool, publish_paced, settings, messages, rate)
        await wait_for("latency", lambda: accounting.events_in - already, len(messages),
                       progress, stall_timeout_s, idle="starting the publisher")
        sent = await publishing
    samples = sorted(handled[e] - t for e, t in sent.items() if e in handled)
    if not samples:
        raise BenchStalled("latency: no fresh event was applied; nothing to measure")
    cuts = statistics.quantiles(samples, n=100, method="inclusive") if len(samples) > 1 \
        else [samples[0]] * 99
    return Latency(offered_per_s=_rate(sent.values()), applied_per_s=_rate(handled.values()),
                   events=len(samples), p50_ms=cuts[49] * 1000, p95_ms=cuts[94] * 1000,
                   p99_ms=cuts[98] * 1000)


def _rate(times: Iterable[float]) -> float:
    """Events per second over the span of their times (0 with fewer than two).

    >>> _rate([10.0, 10.5, 11.0])
    2.0
    """
    ordered = sorted(times)
    span = ordered[-1] - ordered[0] if len(ordered) > 1 else 0.0
    return (len(ordered) - 1) / span if span > 0 else 0.0


def publish_paced(settings: Settings, messages: list[Message], rate: float
                  ) -> dict[str, float]:
    """Publish at ``rate`` events/s; returns each event_id's first send (wall) time.

    Runs in a process of its own (see :func:`_latency`).
    """
    publisher = Publisher(settings)
    sent: dict[str, float] = {}
    started = time.perf_counter()
    for i, m in enumerate(messages):
        delay = started + i / rate - time.perf_counter()
        if delay > 0.001:
            time.sleep(delay)
        event_id = _event_id(m)
        if event_id is not None:
            sent.setdefault(event_id, time.time())
        publisher.send(m.topic, m.key, m.value)
    publisher.flush()
    return sent


def _event_id(message: Message) -> str | None:
    """The event_id a valid message carries (None for one that has none to read)."""
    try:
        payload = decode(message.value)
    except InvalidEvent:
        return None
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    return event_id if isinstance(event_id, str) else None
