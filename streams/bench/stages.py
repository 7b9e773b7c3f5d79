"""The stages ``relevanz bench`` measures, each reading the same published events.

- :func:`measure_raw`: a confluent-kafka consumer decoding every value, the limit;
- :func:`measure_faust`: a bare Faust agent decoding every value, the framework
  ceiling (the worker's Faust settings, :func:`streams.app.build_faust_app`);
- :func:`measure_pipeline`: the worker as :func:`streams.app.build_worker`
  wires it, on a fresh embedded store (or a fresh Cassandra keyspace with
  ``--stack kafka-cassandra``), then optionally its latency at a fixed
  offered load, published from another process as upstream systems would.

Each stage has a consumer group of its own, so each reads everything from the
start, and counts from the first event it consumes to the last, so the group
join is left out.

Processes: the synthetic traffic is generated and published by a process of
its own (:class:`TrafficProcess`; at a million customers the generator holds
gigabytes), and the pipeline runs in a process of its own
(:func:`measure_pipeline_apart`), as one deployed worker would, so its peak
RSS is the worker's alone.  :class:`BatchClock` observes the worker through
the ingest agent's batch hook (each handled batch, its events and outputs).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import resource
import shutil
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

import click
import msgpack
from confluent_kafka import Consumer, KafkaException

from agents.core.accounting import Accounting
from agents.core.customer import CustomerState, MasterData
from agents.faust_batches import batches
from agents.ingest import HandledBatch
from schemas.codec import decode
from schemas.errors import InvalidEvent
from schemas.records import DecisionMade
from schemas.topics import INPUT_TOPICS
from streams import logs
from streams.app import build_faust_app, build_worker, utc_now
from streams.errors import BenchStalled, BrokerUnavailable
from streams.publish import Publisher
from streams.settings import Settings
from streams.sim.traffic import LOCALES, Message, TrafficConfig, TrafficGenerator
from streams.store import BatchWrite, Store
from streams.store.cassandra import CassandraStore
from streams.store.embedded import SCHEMA_VERSION, EmbeddedStore
from streams.topics import ensure_topics

Progress = Callable[[str], None]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _spawn_pool(**kwargs: Any) -> ProcessPoolExecutor:
    """One fresh interpreter: a child that shares nothing with the bench's memory."""
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), **kwargs)


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

    def begin(self, at: float | None = None) -> None:
        """Call when data arrives (``at``, a ``perf_counter`` time; default: now), before
        handling it; only the first call counts."""
        if self.first_at is None:
            self.first_at = time.perf_counter() if at is None else at

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
    """Notes when the ingest agent has handled each batch, through its batch hook.

    :meth:`batch_handled` is one of the worker's
    :attr:`agents.ingest.Ingest.batch_hooks`.  The first batch's start starts
    the meter; once :meth:`watch` is called, each valid event is stamped with
    the wall time its batch was handled (applied, recorded, its outputs and
    dead letters sent), and so is each event a decision of that batch answers.
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        #: event_id -> wall time its batch was handled, once :meth:`watch` is called.
        self.handled: dict[str, float] | None = None
        #: event_id -> wall time the decision it caused was handed to the producer.
        self.decided: dict[str, float] = {}

    def watch(self) -> tuple[dict[str, float], dict[str, float]]:
        """Start noting times; returns the handled and the decided mappings being filled."""
        self.handled, self.decided = {}, {}
        return self.handled, self.decided

    def batch_handled(self, batch: HandledBatch) -> None:
        """The batch hook: count the batch's start and stamp its events and decisions."""
        self.meter.begin(time.perf_counter() - batch.seconds)
        if self.handled is None:
            return
        at = time.time()  # wall time: the publisher runs in another process
        for _, event_id in batch.keys:
            self.handled.setdefault(event_id, at)
        for _, _, output in batch.outputs:
            if isinstance(output, DecisionMade):
                self.decided.setdefault(output.caused_by, at)


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


#: The traffic process's stream (set by its initializer, in that process only).
_STREAM: Iterator[Message] | None = None


def _open_stream(config: TrafficConfig, n: int, log_level: str) -> None:
    global _STREAM  # one stream per traffic process, read in parts by the calls below
    logs.configure(log_level, "console")
    _STREAM = TrafficGenerator(config).messages(n)


def _next(n: int) -> list[Message]:
    assert _STREAM is not None, "the traffic process has no stream"
    return list(islice(_STREAM, n))


def _publish_next(settings: Settings, n: int) -> tuple[int, float]:
    started = time.perf_counter()
    messages = _next(n)
    generated_s = time.perf_counter() - started
    publish(settings, messages)
    return len(messages), generated_s


def _spool_next(path: Path, n: int) -> int:
    messages = _next(n)
    with path.open("wb") as f:
        for m in messages:
            f.write(msgpack.packb((m.topic, m.key, m.value)))
    return len(messages)


def read_spool(path: Path, n: int, skip: int = 0) -> list[Message]:
    """``n`` messages :meth:`TrafficProcess.spool` wrote to ``path``, after the first ``skip``."""
    with path.open("rb") as f:
        unpacker = msgpack.Unpacker(f)
        return [Message(topic, key, value)
                for topic, key, value in islice(unpacker, skip, skip + n)]


class TrafficProcess:
    """One seeded synthetic stream, generated in a process of its own and read in parts.

    The generator keeps every synthetic customer (about 1.7 GB at a million),
    which must not count as the benchmark's or the worker's memory.  Use as a
    context manager; :meth:`publish` and :meth:`spool` continue the same stream.
    """

    def __init__(self, config: TrafficConfig, n: int, log_level: str = "warning") -> None:
        self._pool = _spawn_pool(initializer=_open_stream, initargs=(config, n, log_level))

    def __enter__(self) -> TrafficProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._pool.shutdown(cancel_futures=True)

    async def publish(self, settings: Settings, n: int) -> tuple[int, float]:
        """Publish the next ``n`` messages; returns how many and the seconds generating took."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, _publish_next, settings, n)

    async def spool(self, path: Path, n: int) -> int:
        """Write the next ``n`` messages to ``path`` for :func:`read_spool`; returns how many."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, _spool_next, path, n)


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


async def measure_faust_latency(settings: Settings, backlog: int, messages: list[Message],
                                rate: float, progress: Progress, stall_timeout_s: float
                                ) -> Quantiles:
    """The framework's latency floor: a bare Faust agent at the pipeline's offered load.

    The agent of :func:`measure_faust`'s consumer group comes back, reads the
    ``backlog`` published since it stopped, then gets ``messages`` at
    ``rate``, batched as the worker batches (up to 500, within
    ``RELEVANZ_BATCH_WAIT_MS``); each valid event's latency runs from its
    publishing to its batch being decoded.
    """
    app = build_faust_app(settings.with_(consumer_group=f"{settings.consumer_group}-faust"))
    inputs = app.topic(*(settings.topic(t.name) for t in INPUT_TOPICS), key_type=bytes,
                       value_type=bytes, key_serializer="raw", value_serializer="raw")
    count, received = [0], dict[str, float]()

    @app.agent(inputs, name="bench-floor")
    async def decode_batches(stream: Any) -> None:
        async for events in batches(stream, 500, settings.batch_wait_ms / 1000):
            at = time.time()  # wall time: the publisher runs in another process
            for event in events:
                event_id = _event_id(event.message.value or b"")
                if event_id is not None:
                    received.setdefault(event_id, at)
            count[0] += len(events)
            for event in events:
                await stream.ack(event)

    await app.start()
    try:
        await wait_for("faust latency: backlog", lambda: count[0], backlog, progress,
                       stall_timeout_s)
        with _spawn_pool() as pool:
            publishing = asyncio.get_running_loop().run_in_executor(
                pool, publish_paced, settings, messages, rate)
            await wait_for("faust latency", lambda: count[0] - backlog, len(messages),
                           progress, stall_timeout_s, idle="starting the publisher")
            sent = await publishing
    finally:
        await app.stop()
    return Quantiles.of([received[e] - t for e, t in sent.items() if e in received])


@dataclass(frozen=True)
class Quantiles:
    """Latency percentiles of one set of samples, in milliseconds."""

    events: int
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Quantiles:
        """Percentiles of latencies given in seconds (all zero without samples).

        >>> Quantiles.of([0.001 * i for i in range(1, 101)]).p99_ms
        99.01
        """
        if not samples:
            return cls(0, 0.0, 0.0, 0.0)
        ordered = sorted(samples)
        cuts = (statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1
                else [ordered[0]] * 99)
        return cls(len(ordered), round(cuts[49] * 1000, 2), round(cuts[94] * 1000, 2),
                   round(cuts[98] * 1000, 2))


@dataclass(frozen=True)
class Latency:
    """Latency at a fixed offered load, from publishing an event.

    ``decision``: to the decision it caused being handed to the producer (the
    events that caused one); ``applied``: to its batch being handled (every
    valid event: applied, stored, outputs sent).
    """

    offered_per_s: float
    applied_per_s: float  # below offered_per_s: the pipeline fell behind
    decision: Quantiles
    applied: Quantiles


@dataclass(frozen=True)
class PipelineResult:
    """The full pipeline's throughput, what it ran, its latency if measured, its memory."""

    throughput: Throughput
    agents: list[str]
    latency: Latency | None
    #: Peak resident memory of the process the worker ran in (see measure_pipeline_apart).
    peak_rss_mb: float = 0.0
    #: Customers in the store at the end.
    store_customers: int = 0


async def measure_pipeline(settings: Settings, n: int, store_path: Path, progress: Progress,
                           stall_timeout_s: float,
                           fresh: Callable[[int], list[Message]] | None = None,
                           latency_s: float = 10.0, customers: int = 0, load: float = 0.5,
                           store_url: str | None = None) -> PipelineResult:
    """The worker as deployed, on a fresh embedded store holding ``customers`` (:func:`preload`).

    With ``fresh`` (the next k unpublished messages of the same stream), the
    latency at ``load`` (a share) of the measured maximum follows for ``latency_s`` seconds.
    With ``store_url`` (a Cassandra keyspace no run has written to), the worker
    writes there instead of ``store_path``.
    """
    meter = Meter(n)
    clock = BatchClock(meter)
    store: EmbeddedStore | CassandraStore
    if store_url is None:
        for stale in store_path.parent.glob(f"{store_path.name}*"):
            stale.unlink()  # a ledger of another run would turn events into duplicates
        if customers:
            await preload(store_path, customers, progress)
        store_url = f"embedded:{store_path}"
        store = EmbeddedStore(store_path)
    else:
        store = CassandraStore(settings.with_(store_url=store_url))
        await store.migrate()
        if customers:
            await preload_into(CassandraStore(settings.with_(store_url=store_url)),
                               customers, progress)
    settings = settings.with_(consumer_group=f"{settings.consumer_group}-pipeline",
                              store_url=store_url)
    worker = build_worker(settings, store=store)
    assert worker.ingest is not None  # build_worker always wires the ingest agent
    worker.ingest.batch_hooks.append(clock.batch_handled)
    agents = sorted(agent.name.rsplit(".", 1)[-1] for agent in worker.app.agents.values())
    await worker.start()
    try:
        done_at = await wait_for("pipeline", lambda: worker.accounting.events_in, n, progress,
                                 stall_timeout_s)
        assert meter.first_at is not None
        throughput = Throughput(worker.accounting.events_in, done_at - meter.first_at)
        progress(f"pipeline: {throughput.events_per_s:,.0f} events/s")
        latency = None
        if fresh is not None:
            offered = throughput.events_per_s * load
            messages = fresh(fresh_count(offered, n, latency_s))
            progress(f"latency: {len(messages)} fresh events at {offered:,.0f} events/s "
                     f"({load:.0%} of the pipeline's maximum)")
            latency = await _latency(settings, worker.accounting, clock, messages, offered,
                                     n, progress, stall_timeout_s)
    finally:
        await worker.stop()
    stored = (_stored_customers(store_path) if isinstance(store, EmbeddedStore)
              else await _count_customers(CassandraStore(settings)))
    return PipelineResult(throughput, agents, latency, peak_rss_mb(), stored)


#: Customers written per transaction when preloading the store.
_PRELOAD_CHUNK = 20_000


def preload_state(customer_id: str, i: int, at: datetime) -> CustomerState:
    """A stored customer as a CRM import leaves one: master data, nothing learnt.

    Consent and behaviour come from the measured events, as they do without
    a preload, so the work per event is the same and only the store's size
    (and what a first read of a customer returns) differs.
    """
    locale = LOCALES[i % len(LOCALES)]
    return CustomerState(
        customer_id=customer_id,
        master=MasterData(locale=locale.tag, language=locale.language,
                          time_zone=locale.time_zone, updated_at=at, country=locale.country))


async def preload(store_path: Path, customers: int, progress: Progress) -> float:
    """Give ``store_path`` the whole synthetic audience; returns the seconds it took.

    The ids are the traffic generator's (``cust-000001``…), so the measured
    events meet stored customers as a worker in production does, and the
    store holds ``customers`` whatever share of them the events touch.  The
    preloaded store is kept next to it as a template (a million customers
    take about a minute and a half to write, a copy a second), so a sweep
    writes each audience size once.
    """
    started = time.perf_counter()
    template = store_path.parent / f"preloaded-profiles-{customers}-v{SCHEMA_VERSION}.db"
    if not template.exists():
        building = template.with_suffix(".building")
        for stale in building.parent.glob(f"{building.name}*"):
            stale.unlink()
        # Closing the last connection makes SQLite fold the WAL into the file.
        await preload_into(EmbeddedStore(building), customers, progress)
        building.rename(template)
    shutil.copyfile(template, store_path)
    progress(f"preload: the store holds {customers:,} customers")
    return time.perf_counter() - started


async def preload_into(store: Store, customers: int, progress: Progress) -> None:
    """Give ``store`` (opened and closed here) the whole synthetic audience."""
    at = utc_now()
    await store.open()
    try:
        for first in range(0, customers, _PRELOAD_CHUNK):
            states = [preload_state(f"cust-{i + 1:06d}", i, at)
                      for i in range(first, min(customers, first + _PRELOAD_CHUNK))]
            await store.write_batch(BatchWrite(states), at, 0.0, 0.0)
            progress(f"preload: {first + len(states):,}/{customers:,} customers in the store")
    finally:
        await store.close()


async def _count_customers(store: CassandraStore) -> int:
    """How many customers a Cassandra keyspace holds (a full scan: fine at bench sizes)."""
    await store.open()
    try:
        return sum([1 async for _ in store.iter_customers(utc_now())])
    finally:
        await store.close()


def fresh_count(rate: float, n: int, latency_s: float) -> int:
    """How many fresh events the latency phase publishes: ``latency_s`` at ``rate``, at most n.

    >>> fresh_count(1500.0, 100_000, 10.0), fresh_count(1500.0, 3000, 10.0)
    (15000, 3000)
    """
    return max(1, min(n, math.ceil(rate * latency_s)))


def _stored_customers(store_path: Path) -> int:
    """How many customers the embedded store holds (read-only, after the worker stopped)."""
    with closing(sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)) as db:
        (count,) = db.execute("SELECT count(*) FROM customers").fetchone()
    return int(count)


def _pipeline_process(settings: Settings, n: int, store_path: Path, stall_timeout_s: float,
                      spool: Path | None, latency_s: float, verbose: bool,
                      log_level: str, customers: int, load: float,
                      store_url: str | None = None) -> PipelineResult:
    """:func:`measure_pipeline` in a child process; progress goes to its stderr."""
    logs.configure(log_level, "console")

    def progress(message: str) -> None:
        if verbose:
            click.echo(message, err=True)

    fresh = (lambda k: read_spool(spool, k)) if spool is not None else None
    return asyncio.run(measure_pipeline(settings, n, store_path, progress, stall_timeout_s,
                                        fresh, latency_s, customers, load, store_url))


async def measure_pipeline_apart(settings: Settings, n: int, store_path: Path, *,
                                 stall_timeout_s: float, verbose: bool, log_level: str,
                                 spool: Path | None = None, latency_s: float = 10.0,
                                 customers: int = 0, load: float = 0.5,
                                 store_url: str | None = None) -> PipelineResult:
    """:func:`measure_pipeline` in a fresh process of its own: one worker, as deployed.

    Its peak RSS is then the worker's, not the benchmark's (the raw and Faust
    stages and the decide load run in the bench process). ``spool`` holds the
    fresh events for the latency phase (:meth:`TrafficProcess.spool`);
    ``customers`` are preloaded into the store first (:func:`preload`).
    """
    with _spawn_pool() as pool:
        return await asyncio.get_running_loop().run_in_executor(
            pool, _pipeline_process, settings, n, store_path, stall_timeout_s, spool,
            latency_s, verbose, log_level, customers, load, store_url)


async def _latency(settings: Settings, accounting: Accounting, clock: BatchClock,
                   messages: list[Message], rate: float, already: int, progress: Progress,
                   stall_timeout_s: float) -> Latency:
    handled, decided = clock.watch()
    # Upstream systems publish from other processes; a thread here would take the
    # worker's interpreter lock and measure the benchmark, not the pipeline.
    with _spawn_pool() as pool:
        publishing = asyncio.get_running_loop().run_in_executor(
            pool, publish_paced, settings, messages, rate)
        await wait_for("latency", lambda: accounting.events_in - already, len(messages),
                       progress, stall_timeout_s, idle="starting the publisher")
        sent = await publishing
    applied = [handled[e] - t for e, t in sent.items() if e in handled]
    if not applied:
        raise BenchStalled("latency: no fresh event was applied; nothing to measure")
    return Latency(offered_per_s=_rate(sent.values()), applied_per_s=_rate(handled.values()),
                   decision=Quantiles.of([decided[e] - t for e, t in sent.items()
                                          if e in decided]),
                   applied=Quantiles.of(applied))


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
        event_id = _event_id(m.value)
        if event_id is not None:
            sent.setdefault(event_id, time.time())
        publisher.send(m.topic, m.key, m.value)
    publisher.flush()
    return sent


def _event_id(value: bytes) -> str | None:
    """The event_id a valid message's value carries (None for one that has none to read)."""
    try:
        payload = decode(value)
    except InvalidEvent:
        return None
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    return event_id if isinstance(event_id, str) else None
