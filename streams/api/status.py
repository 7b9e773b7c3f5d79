"""What a worker reports about itself: readiness, throughput, lag, store latency.

:class:`Monitor` watches one running :class:`~streams.app.Worker` and answers
``/ready``, ``/v1/status``, ``/v1/history``, ``/v1/trends`` and ``/metrics`` from numbers it
keeps current in the background, so a request never waits on the broker or
the store.

**Throughput** is counted, not estimated: once a second the monitor samples
each agent's running count (the ingest agent's is ``Accounting.events_in``);
the rate over a window is the count now minus the count at the window's start,
divided by the time covered (the worker's uptime while that is shorter).

**Consumer lag** per assigned partition is ``end offset - committed offset``,
the definition ``kafka-consumer-groups`` uses:

- The *end offset* is the larger of two readings: the high watermark carried by
  the worker's own fetch responses (aiokafka's ``highwater``, fresh with every
  fetch) and a ListOffsets answer fetched every two seconds by a probe client.
  Apache Kafka answers both truly; the ListOffsets reading keeps the end
  current while the worker's fetching stalls (a slow store backs up the
  stream, and a stalled consumer fetches nothing).  The embedded broker
  answers ListOffsets with the offset after the first message of the last
  *batch* written, too low, so there the fetch responses are what is right,
  and taking the larger reading is right on both brokers.
- The *committed offset* is what the consumer group has committed on the
  broker (OffsetFetch through an admin client, so a partition this worker has
  not committed yet still shows its group's position), or this worker's own
  later commit when that is newer.  Faust commits every
  ``RELEVANZ_COMMIT_INTERVAL_S``, so the lag reaches 0 that long after the
  last event is processed.

**Store latency** is the round trip of a small read (the latest snapshot of a
model id no model uses) every two seconds.

**Readiness** (``/ready``) needs all four: the broker answered the probe
within the last ten seconds, the consumer group has assigned this worker at
least one partition and is not rebalancing (a worker beyond the partition
count stands by and reports not ready), the store answered its probe, and
the ingest agent is not held by outputs or dead letters the producer failed
to deliver (check ``publishing``, which names the error).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted

from schemas.codec import decode
from schemas.errors import InvalidEvent
from schemas.records import DeadLetter
from schemas.topics import INPUT_TOPICS
from schemas.validation import build
from streams.errors import StoreUnavailable

if TYPE_CHECKING:
    from streams.app import Worker

log = structlog.get_logger(__name__)

WINDOWS_S = (60, 300)
PROBE_INTERVAL_S = 2.0
HISTORY_STEP_S = 5.0
HISTORY_POINTS = 180  # 15 minutes
#: Campaign uplift and model quality are sampled more slowly: they change slowly,
#: and the uplift is read from the store.
TREND_STEP_S = 15.0
TREND_POINTS = 480  # 2 hours
DEAD_LETTER_SAMPLES = 20
#: How old the last successful probe may be for the worker to count as ready.
FRESH_S = 10.0
#: Model id of the store probe; no model is ever stored under it.
_PROBE_MODEL = "relevanz-status-probe"


def relevanz_version() -> str:
    """The installed package version."""
    try:
        return version("relevanz")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class RateMeter:
    """Running counts sampled over time; rates over trailing windows.

    >>> m = RateMeter(started=0.0)
    >>> m.sample(0.0, {"ingest": 0}); m.sample(30.0, {"ingest": 300})
    >>> m.window(40.0, {"ingest": 400}, 60)
    {'ingest': {'events': 400, 'window_s': 40.0, 'per_s': 10.0}}
    >>> m.sample(70.0, {"ingest": 700})
    >>> m.window(90.0, {"ingest": 900}, 60)["ingest"]
    {'events': 600, 'window_s': 60.0, 'per_s': 10.0}
    """

    started: float
    samples: deque[tuple[float, dict[str, int]]] = field(
        default_factory=lambda: deque(maxlen=max(WINDOWS_S) + 10))

    def sample(self, now: float, counts: dict[str, int]) -> None:
        """Record the running counts at ``now`` (monotonic seconds)."""
        self.samples.append((now, dict(counts)))

    def window(self, now: float, counts: dict[str, int], window_s: float
               ) -> dict[str, dict[str, float | int]]:
        """Per name: events in the trailing window, the seconds it covers, events/s."""
        start = now - window_s
        # The latest sample at or before the window's start; while the worker is
        # younger than the window, the first sample (taken when it started).
        base_t, base = self.samples[0] if self.samples else (self.started, {})
        for t, sampled in self.samples:
            if t > start:
                break
            base_t, base = t, sampled
        span = max(now - base_t, 1e-9)
        out: dict[str, dict[str, float | int]] = {}
        for name, count in counts.items():
            events = count - base.get(name, 0)
            out[name] = {"events": events, "window_s": round(span, 3),
                         "per_s": round(events / span, 2)}
        return out


@dataclass
class Probe:
    """The outcome of the latest probe of one dependency."""

    ok: bool = False
    at: float | None = None  # monotonic time of the last success
    error: str | None = None
    latency_ms: float | None = None

    def fresh(self, now: float) -> bool:
        """Whether it succeeded within :data:`FRESH_S`."""
        return self.ok and self.at is not None and now - self.at <= FRESH_S


#: Longest wait for the monitor's tasks and probe clients when it stops.
STOP_TIMEOUT_S = 5.0


class Monitor:
    """Readiness, throughput, lag and dead-letter samples of one worker."""

    def __init__(self, worker: Worker, clock: Callable[[], float] = time.monotonic):
        self.worker = worker
        self.clock = clock
        self.meter = RateMeter(started=clock())
        self.broker = Probe()
        self.store = Probe()
        self.store_latencies: deque[float] = deque(maxlen=60)
        self.end_offsets: dict[TopicPartition, int] = {}
        self.group_committed: dict[TopicPartition, int] = {}
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=DEAD_LETTER_SAMPLES)
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.trends: deque[dict[str, Any]] = deque(maxlen=TREND_POINTS)
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: AIOKafkaConsumer | None = None
        # The dead-letter sampler reads with a consumer of its own: assigning the
        # probe's consumer to the dead-letter topic narrowed its metadata to that
        # topic, and the probe's end-offset requests for the input topics then
        # timed out on the embedded broker (the worker never became ready).
        self._letters: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._dead_letter_topic = worker.settings.topic("dead-letters")
        self._inputs = {worker.settings.topic(t.name) for t in INPUT_TOPICS}

    # --- counts the meter samples ------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Running counts per agent: messages consumed, decisions made, triggers emitted."""
        accounting = self.worker.accounting
        return {"ingest": accounting.events_in, "decisions": accounting.decisions,
                "send_triggers": accounting.send_triggers}

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start sampling and probing in the background (never fails: probes report)."""
        settings = self.worker.settings
        self._consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker_servers,
                                          group_id=None, enable_auto_commit=False)
        self._letters = AIOKafkaConsumer(bootstrap_servers=settings.broker_servers,
                                         group_id=None, enable_auto_commit=False)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker_servers)
        self.meter.sample(self.clock(), self.counts())
        self._tasks = [asyncio.create_task(self._sample_loop()),
                       asyncio.create_task(self._probe_loop()),
                       asyncio.create_task(self._dead_letter_loop())]

    async def stop(self) -> None:
        """Stop the background work and close the probe clients."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
        self._tasks = []
        # The probe clients talk to the broker: never wait on them for long.
        closing = [asyncio.ensure_future(c) for c in (
            self._consumer.stop() if self._consumer is not None else None,
            self._letters.stop() if self._letters is not None else None,
            self._admin.close() if self._admin is not None else None) if c is not None]
        if closing:
            _, late = await asyncio.wait(closing, timeout=STOP_TIMEOUT_S)
            for task in late:
                task.cancel()
            if late:
                log.warning("status_probe_close_timed_out", clients=len(late))

    async def _sample_loop(self) -> None:
        last_point = self.clock()
        last_trend: float | None = None
        while True:
            await asyncio.sleep(1.0)
            now = self.clock()
            self.meter.sample(now, self.counts())
            if now - last_point >= HISTORY_STEP_S:
                last_point = now
                try:
                    self.history.append(self._history_point(now))
                except Exception:  # as in the probe loop: log it, keep sampling
                    log.exception("status_history_crashed")
            if self.worker.ready and (last_trend is None or now - last_trend >= TREND_STEP_S):
                last_trend = now
                try:
                    self.trends.append(await self._trend_point())
                except StoreUnavailable as exc:  # a gap in the chart, not a crash
                    log.warning("status_trend_skipped", error=str(exc))
                except Exception:  # as above: log it, keep sampling
                    log.exception("status_trend_crashed")

    async def _trend_point(self) -> dict[str, Any]:
        """Each model's quality and each campaign's uplift on its goal, now."""
        from agents.pipeline.campaign_desk import campaign_report

        stage = self.worker.stage
        models = [{k: q.get(k) for k in ("model", "examples", "roc_auc", "log_loss", "drifts")}
                  for q in _models(stage)["quality"]]
        campaigns = []
        if stage is not None:
            for entry in await campaign_report(self.worker):
                uplift = (entry["uplift"] or {}).get(entry["goal"]) or {}
                campaigns.append({
                    "campaign_id": entry["campaign_id"], "goal": entry["goal"],
                    "sends": entry["treated"]["sends"], "held_out": entry["holdout"]["sends"],
                    "difference": uplift.get("difference"), "low": uplift.get("low"),
                    "high": uplift.get("high")})
        return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "models": models,
                "campaigns": campaigns}

    def _history_point(self, now: float) -> dict[str, Any]:
        rates = self.meter.window(now, self.counts(), HISTORY_STEP_S)
        lag = [p["lag"] for p in self.partitions() if p["lag"] is not None]
        stage = self.worker.stage
        return {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "events_per_s": rates["ingest"]["per_s"],
            "lag": sum(lag) if lag else None,
            "dead_letters": self.worker.accounting.dead_letters,
            "tag_changes": stage.tag_changes if stage is not None else 0,
            "store_latency_ms": self.store.latency_ms,
        }

    async def _probe_loop(self) -> None:
        started = False
        while True:
            try:
                if self.worker.ready:
                    if not started:
                        started = await self._start_clients()
                    if started:
                        await self._probe_broker()
                    await self._probe_store()
            except Exception:  # a bug here must not end the probing for good: log it, go on
                log.exception("status_probe_crashed")
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _start_clients(self) -> bool:
        assert self._consumer is not None
        assert self._admin is not None
        try:
            await asyncio.wait_for(self._consumer.start(), FRESH_S)
            await asyncio.wait_for(self._admin.start(), FRESH_S)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.broker = Probe(ok=False, at=self.broker.at, error=_text(exc))
            return False
        return True

    async def _probe_broker(self) -> None:
        assert self._consumer is not None
        assert self._admin is not None
        assigned = [TopicPartition(tp.topic, tp.partition) for tp in self.assignment()]
        try:
            if assigned:
                ends = await asyncio.wait_for(self._consumer.end_offsets(assigned), FRESH_S)
                committed = await asyncio.wait_for(self._admin.list_consumer_group_offsets(
                    self.worker.settings.consumer_group, partitions=assigned), FRESH_S)
                self.end_offsets = dict(ends)
                self.group_committed = {tp: meta.offset for tp, meta in committed.items()
                                        if meta.offset >= 0}
            else:
                await asyncio.wait_for(self._consumer.topics(), FRESH_S)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.broker = Probe(ok=False, at=self.broker.at, error=_text(exc))
            return
        self.broker = Probe(ok=True, at=self.clock())

    async def _probe_store(self) -> None:
        started = self.clock()
        try:
            await asyncio.wait_for(self.worker.store.latest_snapshot(_PROBE_MODEL),
                                   self.worker.settings.store_timeout_s)
        except (StoreUnavailable, TimeoutError) as exc:
            self.store = Probe(ok=False, at=self.store.at, error=_text(exc))
            return
        latency = (self.clock() - started) * 1000
        self.store_latencies.append(latency)
        self.store = Probe(ok=True, at=self.clock(), latency_ms=round(latency, 2))

    async def _dead_letter_loop(self) -> None:
        """Keep the latest dead letters of the whole deployment (every worker's)."""
        consumer = self._letters
        assert consumer is not None
        while True:  # until the broker answers the probe
            await asyncio.sleep(PROBE_INTERVAL_S)
            if not self.broker.ok:
                continue
            try:
                await asyncio.wait_for(consumer.start(), FRESH_S)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("dead_letter_read_failed", error=_text(exc))
                continue
            break
        while True:  # until the client knows the topic
            await asyncio.sleep(PROBE_INTERVAL_S)
            partitions = consumer.partitions_for_topic(self._dead_letter_topic)
            if not partitions:
                # Apache Kafka names no topic in metadata the client did not ask for
                # (the embedded broker names all): tracking one partition asks for it.
                consumer.assign([TopicPartition(self._dead_letter_topic, 0)])
                continue
            assigned = [TopicPartition(self._dead_letter_topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            try:
                ends = await consumer.end_offsets(assigned)
            except KafkaError as exc:
                log.warning("dead_letter_read_failed", error=str(exc))
                continue
            # Start a few messages before the end (ListOffsets may answer low,
            # see above: then a few more are read, and only the latest kept).
            for tp in assigned:
                consumer.seek(tp, max(ends.get(tp, 0) - DEAD_LETTER_SAMPLES, 0))
            break
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            except KafkaError as exc:
                log.warning("dead_letter_read_failed", error=str(exc))
                await asyncio.sleep(PROBE_INTERVAL_S)
                continue
            for messages in batches.values():
                for message in messages:
                    self._take_dead_letter(message.value)

    def _take_dead_letter(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            letter = build(DeadLetter, decode(raw))
        except InvalidEvent:
            return  # not one of ours; nothing to show
        assert isinstance(letter, DeadLetter)
        # The original bytes may hold personal data: show their size, not them.
        self.dead_letters.append({
            "received_at": letter.received_at.isoformat(),
            "source_topic": self._logical(letter.source_topic),
            "partition": letter.partition, "offset": letter.offset,
            "field": letter.field, "reason": letter.reason,
            "original_bytes": len(letter.original),
        })

    # --- what the API shows ------------------------------------------------------

    def assignment(self) -> set[Any]:
        """The input topic-partitions the consumer group gave this worker (Faust TPs)."""
        if not self.worker.ready:
            return set()
        try:
            assigned = self.worker.app.consumer.assignment()
        except ConsumerNotStarted:
            return set()
        # Faust also assigns its own internal topics (the assignor's leader topic).
        return {tp for tp in assigned if tp.topic in self._inputs}

    def _logical(self, topic: str) -> str:
        return topic.removeprefix(self.worker.settings.topic_prefix)

    def partitions(self) -> list[dict[str, Any]]:
        """Per assigned partition: end, committed and read offsets and the lag."""
        app = self.worker.app
        own_commits = app.monitor.tp_committed_offsets
        reads = app.monitor.tp_read_offsets
        rows = []
        for tp in sorted(self.assignment()):
            key = TopicPartition(tp.topic, tp.partition)
            try:
                fetched = app.consumer.highwater(tp)
            except ConsumerNotStarted:
                fetched = None
            ends = [e for e in (fetched, self.end_offsets.get(key)) if e is not None]
            end = max(ends) if ends else None
            commits = [c for c in (self.group_committed.get(key), own_commits.get(tp))
                       if c is not None]
            committed = max(commits) if commits else None
            read = reads.get(tp)
            rows.append({
                "topic": self._logical(tp.topic), "partition": tp.partition,
                "end_offset": end, "committed_offset": committed,
                "read_offset": None if read is None else read + 1,
                "lag": None if end is None else max(end - (committed or 0), 0),
            })
        return rows

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether this worker is ready, and each check in words."""
        now = self.clock()
        assigned = self.assignment()
        rebalancing = bool(getattr(self.worker.app, "rebalancing", False))
        checks = {
            "worker": "started" if self.worker.ready else "starting",
            "broker": "reachable" if self.broker.fresh(now) else (
                f"not reachable ({self.broker.error})" if self.broker.error else "not checked yet"),
            "partitions": ("rebalancing" if rebalancing else
                           f"{len(assigned)} assigned" if assigned else "none assigned"),
            "store": "reachable" if self.store.fresh(now) else (
                f"not reachable ({self.store.error})" if self.store.error else "not checked yet"),
        }
        blocked = self.worker.ingest.publish_blocked if self.worker.ingest else None
        checks["publishing"] = blocked or "delivering"
        ready = (self.worker.ready and self.broker.fresh(now) and self.store.fresh(now)
                 and bool(assigned) and not rebalancing and blocked is None)
        return ready, checks

    def snapshot(self) -> dict[str, Any]:
        """The whole ``/v1/status`` document."""
        now = self.clock()
        counts = self.counts()
        ready, checks = self.readiness()
        accounting = self.worker.accounting
        partitions = self.partitions()
        lags = [p["lag"] for p in partitions if p["lag"] is not None]
        latencies = sorted(self.store_latencies)
        stage = self.worker.stage
        controls = self.worker.controls
        throughput: dict[str, dict[str, Any]] = {name: {} for name in counts}
        for window in WINDOWS_S:
            for name, rate in self.meter.window(now, counts, window).items():
                throughput[name][f"{window // 60}m"] = rate
        return {
            "version": relevanz_version(),
            "consumer_group": self.worker.settings.consumer_group,
            "ready": ready,
            "checks": checks,
            "uptime_s": round(now - self.meter.started, 1),
            "partitions": partitions,
            "lag_total": sum(lags) if lags else None,
            "input_topics": [t.name for t in INPUT_TOPICS],
            "throughput": throughput,
            "counts": accounting.as_dict(),
            "dead_letters": {
                "total": accounting.dead_letters,
                "by_field": _by_field(accounting.dead_letters_by_reason),
                "by_topic": {topic: dict(sorted(counts.items())) for topic, counts
                             in sorted(accounting.dead_letters_by_reason.items())},
                "latest": list(reversed(self.dead_letters)),
            },
            "store": {
                "kind": self.worker.settings.store_kind,
                "reachable": self.store.fresh(now),
                "latency_ms": self.store.latency_ms,
                "latency_ms_p50": round(latencies[len(latencies) // 2], 2) if latencies else None,
                "latency_ms_max": round(latencies[-1], 2) if latencies else None,
            },
            "interest_tags": {
                "tag_changes": stage.tag_changes if stage is not None else 0,
                "cached_customers": len(stage.cache) if stage is not None else 0,
            },
            # Progressive-validation quality and recent drifts of the learned models.
            "models": _models(stage),
            "controls": controls.as_dict() if controls is not None else None,
            "event_time": self.event_time(),
        }

    def event_time(self) -> dict[str, Any] | None:
        """The low watermark the worker's clock follows, and the events read behind it."""
        ingest = self.worker.ingest
        progress = ingest.progress if ingest is not None else None
        if progress is None:
            return None
        return {"watermark": progress.value.isoformat() if progress.value else None,
                "newest": progress.newest.isoformat() if progress.newest else None,
                "partitions_behind": progress.behind(), "late_events": progress.late}


def _by_field(by_topic: dict[str, dict[str, int]]) -> dict[str, int]:
    """Dead-letter counts per field label over every topic.

    >>> _by_field({"clicks": {"other": 2, "url": 1}, "profiles": {"other": 1}})
    {'other': 3, 'url': 1}
    """
    total: dict[str, int] = {}
    for counts in by_topic.values():
        for label, count in counts.items():
            total[label] = total.get(label, 0) + count
    return dict(sorted(total.items()))


def recent_drifts(stage: Any) -> list[dict[str, Any]]:
    """The drifts of the learned models this worker remembers, with their times."""
    drift: list[dict[str, Any]] = _models(stage)["drift"]
    return drift


def _models(stage: Any) -> dict[str, Any]:
    learner = stage.learner if stage is not None else None
    if learner is None:
        return {"quality": [], "drift": [],
                "note": "this process learns nothing (replay, or no customer stage)"}
    forecaster = stage.forecaster
    quality = [learner.quality(), *(forecaster.quality() if forecaster is not None else [])]
    drifts = list(learner.drifts)
    if forecaster is not None:
        drifts += [{"model": d.model_id, "at": d.at.isoformat(), "examples": d.examples,
                    "error": round(d.error, 5)} for d in forecaster.drifts]
    sessions = getattr(stage, "sessions", None)
    if sessions is not None:  # the next-page, session-conversion and time-left models
        quality += sessions.quality()
        drifts += [{"model": d.model_id, "at": d.at.isoformat(), "examples": d.examples,
                    "error": round(d.error, 5)} for d in sessions.drifts[-20:]]
    return {"quality": quality, "drift": drifts,
            "note": "every model is scored on each label before it learns it (progressive "
                    "validation); drifts are also emitted on the model-drift topic"}


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
