"""The composition root: builds the Faust app, its topics, store and agents.

:func:`build_worker` wires real adapters from :class:`Settings`; nothing is
built at import time.  :class:`Worker` runs it inside the caller's event loop
(the CLI's ``worker`` and ``demo`` commands and the integration tests share
it), with a periodic canonical log line instead of per-event logging.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
import structlog
from faust.types import TP

from agents import ingest as ingest_agent
from agents.core.accounting import Accounting
from agents.core.campaigns import DEFAULT_BOOK, CampaignBook, CampaignFileError
from agents.core.cobuy import CoPurchases
from agents.core.consent import ConsentPolicy
from agents.core.engine import EngineRules, FollowUpRules
from agents.core.learning import PolicyConfig
from agents.core.profile import CustomerRules, ProfileRules
from agents.core.session_state import SessionModels
from agents.core.visitors import VisitorRules
from agents.core.watermarks import LowWatermark
from agents.pipeline import campaign_desk
from agents.pipeline.customer_cache import CustomerCache
from agents.pipeline.customer_stage import CustomerStage
from agents.pipeline.forecasts import Forecaster
from agents.pipeline.identity_stage import IdentityStage
from agents.pipeline.lapses import QuietWatch
from agents.pipeline.learner import Learner
from agents.pipeline.sessions import SessionStage
from schemas.codec import register_codec
from schemas.dead_letters import RESERVE_BYTES
from schemas.topics import INPUT_TOPICS
from schemas.validation import Limits
from streams.campaign_file import load_campaigns
from streams.catalogue import Catalogue
from streams.controls import Controls
from streams.errors import ConfigError, StoreUnavailable
from streams.faust_fetch_wait import use_fetch_wait
from streams.faust_offsets import input_offsets
from streams.idempotent_faust import IdempotentApp
from streams.instruments import Instruments
from streams.logs import use_pseudonym_key
from streams.privacy import ForgetList, Pseudonyms
from streams.settings import Settings
from streams.store import Store, open_store
from streams.tag_rules import load_engagement, load_rules
from streams.topics import ensure_topics, input_limit_warnings, message_limits
from streams.tracing import Tracing

log = structlog.get_logger(__name__)


def utc_now() -> datetime:
    """The wall clock, the only one the worker reads (the core takes ``now``)."""
    return datetime.now(UTC)


#: Allocations between young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 5_000


def _tune_gc() -> None:
    """Collect garbage cycles less often, and never walk what start-up built.

    A worker allocates and frees many short-lived objects per event (decoded
    messages, records, state copies); with CPython's default thresholds the
    cycle collector ran about 40 times a second and its full collections,
    which walk every object of the interpreter (Faust, River, SciPy and the
    customer cache), paused the event loop for up to 0.4 s each: about a
    tenth of the CPU and the worst latencies of the benchmark.  Reference
    counting frees almost all of it anyway.  Objects that exist once the
    worker has started (modules, the catalogue) are frozen out of the
    collector's walks.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def publish_limit(max_event_bytes: int, producer_max: int, broker_max: int | None) -> int:
    """The largest dead letter to publish: what both the producer and the broker take.

    Logs one line with the limits; a warning when ``RELEVANZ_MAX_EVENT_BYTES``
    admits events larger than a dead letter carries in full (their dead
    letters then carry a prefix, the length and a SHA-256).
    """
    limit = producer_max if broker_max is None else min(producer_max, broker_max)
    carried = limit - RESERVE_BYTES
    fields = {"max_event_bytes": max_event_bytes, "producer_max_request_bytes": producer_max,
              "broker_max_message_bytes": broker_max or "not reported",
              "dead_letter_carries_bytes": carried}
    if max_event_bytes > carried:
        log.warning("events_above_dead_letter_size", **fields,
                    consequence="a larger invalid event's dead letter carries a prefix, "
                                "its length and its SHA-256")
    else:
        log.info("publish_limits", **fields)
    return limit


def build_faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from settings, with no agents yet."""
    register_codec()
    use_fetch_wait(settings.fetch_wait_ms)
    app_type = IdempotentApp if settings.idempotent_producers else faust.App
    return app_type(
        settings.consumer_group,
        broker=[f"kafka://{server}" for server in settings.broker_servers.split(",")],
        autodiscover=False,
        web_enabled=False,  # the operator API is our own aiohttp app
        store="memory://",
        # Faust would create "<group>-data/" in the working directory; it keeps
        # nothing there with in-memory tables, so point it away from the user's files.
        datadir=str(Path(tempfile.gettempdir()) / f"relevanz-faust-{settings.consumer_group}"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_commit_interval=settings.commit_interval_s,
        producer_acks=-1,
        stream_wait_empty=False,
    )


@dataclass
class Worker:
    """One Relevanz worker: Faust app, store and accounting, started in the running loop."""

    settings: Settings
    app: faust.App
    store: Store
    accounting: Accounting = field(default_factory=Accounting)
    catalogue: Catalogue | None = None
    stage: CustomerStage | None = None
    ingest: ingest_agent.Ingest | None = None
    #: The kill switch and campaign pauses (None in replay, which sends nothing).
    controls: Controls | None = None
    #: The campaign book the customer stage follows (RELEVANZ_CAMPAIGNS, else the default).
    campaigns: CampaignBook = DEFAULT_BOOK
    summary_interval_s: float = 10.0
    ready: bool = False
    #: Save the content policy to the store (not in replay, which only rebuilds projections).
    save_models: bool = True
    #: Latency histograms and process collectors behind /metrics.
    instruments: Instruments = field(default_factory=Instruments)
    _summary_task: asyncio.Task[None] | None = None
    _snapshot_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create topics, open the store, read the catalogue, join the consumer group."""
        await asyncio.to_thread(ensure_topics, self.settings)
        if self.ingest is not None:
            limits = await asyncio.to_thread(
                message_limits, self.settings, ["dead-letters", *(t.name for t in INPUT_TOPICS)])
            self.ingest.max_publish_bytes = publish_limit(
                self.settings.max_event_bytes, self.app.conf.producer_max_request_size,
                limits["dead-letters"])
            for line in input_limit_warnings(self.settings, limits):
                log.warning("input_topic_limit_below_max_event_bytes", problem=line)
        await self.store.open()
        if self.stage is not None:
            await self.load_privacy()
            if self.stage.learner is not None:
                await self.stage.learner.load(self.store)
            if self.save_models and self.stage.forecaster is not None:
                await self.stage.forecaster.load(self.store)
        if self.catalogue is not None:
            await self.catalogue.start()
        if self.controls is not None:
            await self.controls.start()
        await self.app.start()
        _tune_gc()
        self._summary_task = asyncio.create_task(self._summaries())
        if self.save_models and self.stage is not None and self.stage.learner is not None:
            self._snapshot_task = asyncio.create_task(self._snapshots())
        self.ready = True
        log.info("worker_started", group=self.settings.consumer_group,
                 partitions=self.settings.partitions)

    async def load_privacy(self) -> None:
        """Read the pseudonym key and the forget-list (at start and after a rebalance)."""
        assert self.stage is not None
        key = await self.store.pseudonym_key()
        use_pseudonym_key(key)
        self.stage.forget_list.pseudonyms = Pseudonyms(key)
        self.stage.forget_list.replace(await self.store.forgotten())

    async def stop(self) -> None:
        """Stop consuming, finish the batch in flight, commit offsets, close the store.

        Bounded by ``RELEVANZ_SHUTDOWN_TIMEOUT_S``.  State is written to the
        store with every batch before the batch is acknowledged, so once the
        batch in flight is done nothing is cached that the store lacks; a batch
        that cannot finish in time (the store is down) is left unacknowledged
        and redelivered after a restart, where its ledger entries make any
        part already written a duplicate.
        """
        self.ready = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout_s

        def remaining() -> float:
            return max(deadline - loop.time(), 0.1)

        for task in (self._summary_task, self._snapshot_task):
            if task is not None:
                task.cancel()
                await asyncio.wait({task}, timeout=remaining())
        drained = True
        if self.ingest is not None:
            drained = await self.ingest.close(remaining())
        if self._snapshot_task is not None:
            drained = await _within(self.save_model(), remaining(), "model snapshot") and drained
        # Faust commits the acknowledged offsets as its consumer stops.
        clean = await _within(self.app.stop(), remaining(), "consumer") and drained
        if self.catalogue is not None:
            clean = await _within(self.catalogue.stop(), remaining(), "catalogue") and clean
        if self.controls is not None:
            clean = await _within(self.controls.stop(), remaining(), "controls") and clean
        clean = await _within(self.store.close(), remaining(), "store") and clean
        if self.ingest is not None and self.ingest.tracing.exporting:
            # The spans still buffered go to the collector (its HTTP client blocks).
            clean = await _within(asyncio.to_thread(self.ingest.tracing.shutdown),
                                  remaining(), "trace export") and clean
        log.info("worker_stopped", clean=clean, **self.accounting.as_dict())

    async def save_model(self) -> None:
        """Store the content policy as its next snapshot version (failures are logged)."""
        learner = self.stage.learner if self.stage is not None else None
        if learner is None:
            return
        forecaster = self.stage.forecaster if self.stage is not None else None
        try:
            version = await learner.save(self.store, utc_now())
            outcome = (await forecaster.save(self.store, utc_now())
                       if forecaster is not None else {})
        except StoreUnavailable as exc:
            log.warning("model_snapshot_failed", error=str(exc))
            return
        log.info("model_saved", version=version, rewards=learner.rewards,
                 open_decisions=learner.open_decisions, outcome_models=outcome)

    async def report_campaigns(self) -> None:
        """Publish the campaign statistics and expire overdue proposals (errors are logged).

        Only a worker that sends (not replay) does it; every worker reports the
        same totals from the store, and the compacted topic keeps the latest.
        """
        if self.controls is None or self.ingest is None:
            return
        try:
            now = utc_now()
            await campaign_desk.expire_proposals(self, now)
            self.accounting.campaign_reports += await campaign_desk.report_campaigns(self, now)
        except Exception:  # a report must never end the worker's housekeeping
            log.exception("campaign_report_failed")

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_interval_s)
            await self.save_model()

    async def _summaries(self) -> None:
        last, last_t = 0, time.monotonic()
        stats_every = self.settings.campaign_stats_interval_s
        next_summary, next_stats = last_t + self.summary_interval_s, last_t + stats_every
        while True:
            await asyncio.sleep(max(0.05, min(next_summary, next_stats) - time.monotonic()))
            now_t = time.monotonic()
            if now_t >= next_stats:
                next_stats = now_t + stats_every
                await self.report_campaigns()
            if now_t < next_summary:
                continue
            next_summary = now_t + self.summary_interval_s
            counts = self.accounting.as_dict()
            rate = (self.accounting.events_in - last) / max(now_t - last_t, 1e-9)
            extra = {"tag_changes": self.stage.tag_changes,
                     "cached_customers": len(self.stage.cache)} if self.stage else {}
            log.info("worker_progress", events_per_s=round(rate, 1), **counts, **extra)
            last, last_t = self.accounting.events_in, now_t


async def _within(step: Awaitable[None], timeout_s: float, what: str) -> bool:
    """Await one shutdown step for at most ``timeout_s``; False when it timed out.

    Truly bounded: ``asyncio.wait_for`` waits for a cancelled step to finish,
    which a client that swallows the cancellation (or waits on a broker that
    never answers) would never do.  A step still running after its time and a
    second of grace is left behind, logged, and the shutdown goes on.
    """
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        task.result()  # a step's own error is the caller's to see
        return True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    log.warning("worker_stop_timed_out", step=what, timeout_s=round(timeout_s, 1),
                abandoned=task not in done)
    return False


#: Topics the customer stage emits to.
_STAGE_OUTPUTS = ("interest-tags", "decisions", "send-triggers", "send-cancellations",
                  "customer-erased", "model-drift", "send-proposals", "proposal-resolutions",
                  "campaign-stats", "visitor_merges")


def campaign_book(settings: Settings) -> CampaignBook:
    """The campaign book of ``RELEVANZ_CAMPAIGNS``, or the built-in one when it is empty."""
    if not settings.campaigns_path:
        return DEFAULT_BOOK
    try:
        return load_campaigns(settings.campaigns_path)
    except CampaignFileError as exc:
        raise ConfigError(f"RELEVANZ_CAMPAIGNS: {exc}") from exc


def build_stage(settings: Settings, store: Store, limits: Limits, *, emit: bool = True,
                controls: Controls | None = None) -> CustomerStage:
    """The customer stage as the worker wires it (``emit=False``: as replay does).

    ``controls`` are the kill switch and campaign pauses it follows (None: none).
    Tests drive it directly, with a real store, through ``stage.apply`` and
    ``stage.commit``, as the ingest agent does.
    """
    catalogue = Catalogue(settings, utc_now, limits)
    cache = CustomerCache(store, settings.cache_customers)
    accounting = Accounting()
    book = campaign_book(settings)
    stage = CustomerStage(
        cache=cache,
        rules=EngineRules(
            customer=CustomerRules(
                interests=load_rules(settings.tag_rules_path or None),
                profile=ProfileRules(history_max=settings.history_max,
                                     history_retention=timedelta(
                                         seconds=settings.history_retention_s)),
            ),
            consent=ConsentPolicy(default_granted=settings.consent_default),
            follow_up=FollowUpRules(delay=timedelta(seconds=settings.follow_up_delay_s)),
            book=book,
        ),
        ledger_ttl_s=settings.dedup_horizon_s,
        history_ttl_s=settings.history_retention_s,
        catalogue=catalogue,
        # The key is read from the store at start (Worker.load_privacy).
        forget_list=ForgetList(Pseudonyms(b"")),
        accounting=accounting,
        # Replay recomputes predictions too (from fresh models: it does not save them).
        forecaster=Forecaster(),
        # Win-back checks fire on the event-time watermark, in replay as live.
        quiet=QuietWatch() if book.with_trigger("win_back") else None,
        cobuy=CoPurchases(),
        # Replay rebuilds state; the statistics and proposals of the live run stand.
        count_campaigns=emit,
    )
    if emit:
        # Replay rebuilds projections: it neither learns nor chooses with the live model.
        stage.learner = Learner(
            PolicyConfig(explore=settings.explore, holdout_share=settings.holdout_share),
            attribution_window=timedelta(seconds=settings.attribution_window_s),
            interest_half_life=stage.rules.customer.interests.half_life)
    stage.sessions = SessionStage(store, catalogue, SessionModels(
        engagement=load_engagement(settings.tag_rules_path or None),
        half_life=stage.rules.customer.interests.half_life,
        idle_grace=timedelta(seconds=settings.session_idle_grace_s)))
    if controls is not None:
        stage.sends_paused = lambda: controls.paused
        # campaign_paused is also true while the global kill switch is on.
        stage.campaign_paused = controls.campaign_paused
    return stage


async def _rebuild_win_backs(worker: Worker, assigned: set[TP], topics: set[str]) -> None:
    """Watch again, for win-back, every stored customer, when this worker owns every
    partition of the customer-keyed input topics (it then owns every customer).

    The index of due checks lives in memory, so a restarted worker would check a
    quiet customer only after their next event.  Which stored customers a share of
    the partitions owns is not known (producers may partition keys differently), so
    with several workers it is not rebuilt: a check of another worker's customer
    would write a state that worker owns.
    """
    stage = worker.stage
    if stage is None or stage.quiet is None:
        return
    consumer = worker.app.consumer
    owned = {topic: {tp.partition for tp in assigned if tp.topic == topic} for topic in topics}
    counts = {topic: consumer.topic_partitions(topic) or worker.settings.partitions
              for topic in topics}
    if any(len(owned[topic]) < counts[topic] for topic in topics):
        log.info("win_back_checks_not_rebuilt", reason="this worker owns a share of the "
                 "partitions; a quiet customer is checked again after their next event")
        return
    watched = await stage.quiet.rebuild(worker.store.iter_customers(utc_now()))
    log.info("win_back_checks_rebuilt", customers=watched)


def build_worker(settings: Settings, store: Store | None = None, *, emit: bool = True
                 ) -> Worker:
    """Wire a worker from settings: topics, store, catalogue, the ingest agent.

    ``emit=False`` (replay) applies events without publishing outputs again.
    """
    app = build_faust_app(settings)
    names = {settings.topic(t.name): t.name for t in INPUT_TOPICS}
    inputs = app.topic(*names, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")

    def output(logical: str) -> faust.types.TopicT:
        return app.topic(settings.topic(logical), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    limits = Limits(max_event_bytes=settings.max_event_bytes,
                    max_future=timedelta(seconds=settings.max_future_s))
    instruments = Instruments()
    app.sensors.add(instruments.sensor())
    store = instruments.timed(store or open_store(settings))
    # The kill switch and campaign pauses; replay sends nothing, so it follows none.
    controls = Controls(settings, utc_now) if emit else None
    stage = build_stage(settings, store, limits, emit=emit, controls=controls)
    catalogue, accounting, book = stage.catalogue, stage.accounting, stage.rules.book
    worker = Worker(settings=settings, app=app, store=store, accounting=accounting,
                    catalogue=catalogue, stage=stage,
                    controls=controls, save_models=emit, campaigns=book,
                    instruments=instruments)
    # The input partitions in event-time order per key (the compacted catalogue is not).
    ordered = {name for name, logical in names.items()
               if not next(t for t in INPUT_TOPICS if t.name == logical).compacted}
    ingest = ingest_agent.Ingest(
        store=store,
        dead_letters=output("dead-letters"),
        accounting=worker.accounting,
        logical_names=names,
        clock=utc_now,
        limits=limits,
        dedup_horizon_s=settings.dedup_horizon_s,
        outputs={name: output(name) for name in _STAGE_OUTPUTS} if emit else {},
        stage=IdentityStage(stage, VisitorRules(
            expire_after=timedelta(seconds=settings.visitor_expiry_s))),
        emit=emit,
        catalogue_removed=catalogue.forget,
        max_publish_bytes=app.conf.producer_max_request_size,
        batch_hooks=[instruments.batch_handled],
        # Replay publishes nothing, so it has no context to carry and no spans to show.
        tracing=Tracing.from_settings(settings) if emit else Tracing(),
        # The stage's clock: the low watermark over the input partitions it reads.
        progress=LowWatermark(),
        input_offsets=lambda: input_offsets(app, ordered),
    )
    stage.progress = ingest.progress
    ingest_agent.register(app, inputs, ingest,
                          batch_within=timedelta(milliseconds=settings.batch_wait_ms))
    worker.ingest = ingest

    @app.on_partitions_revoked.connect  # type: ignore[arg-type] # mode's signal stubs want a sync signature
    async def forget_moved_customers(app: faust.App, revoked: object, **_: object) -> None:
        # Another worker may change these customers now; re-read them when they return,
        # and the forget-list with them (they may have been erased meanwhile).
        stage.cache.invalidate()
        await worker.load_privacy()
        if ingest.progress is not None:
            ingest.progress.forget()  # the partitions read from now on are tracked afresh

    @app.on_partitions_assigned.connect  # type: ignore[arg-type] # as above
    async def log_assignment(app: faust.App, assigned: set[TP], **_: object) -> None:
        # One line per rebalance: which input partitions this worker now owns.
        log.info("partitions_assigned", partitions=sorted(
            {tp.partition for tp in assigned if tp.topic in names}))
        await _rebuild_win_backs(worker, assigned, ordered)

    return worker
