"""``relevanz demo``: the whole engine on one machine with zero set-up.

Starts the embedded broker, a fresh embedded store and a worker in this
process (or, with ``--stack kafka-cassandra``, Apache Kafka and Apache
Cassandra from Maven Central in place of the two), publishes synthetic
traffic and reports where every event went.
With ``events`` set it stops once all of them are accounted for and returns
the counts; without, it keeps generating traffic at ``rate`` until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from agents.core.interests import tag_quality, true_tags
from streams.api.web import serve_for_demo
from streams.app import Worker, build_worker, utc_now
from streams.broker import EmbeddedBroker
from streams.errors import DemoStalled
from streams.publish import Publisher
from streams.servers.cassandra import CassandraServer
from streams.servers.kafka import KafkaServer
from streams.settings import Settings
from streams.sim.campaign_sim import evaluate_campaigns
from streams.sim.sessions import SessionConfig, SessionGenerator, session_report
from streams.sim.simulation import evaluate_policies
from streams.sim.traffic import Message, TrafficConfig, TrafficGenerator
from streams.store import open_store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What the demo generates."""

    events: int | None = None
    seed: int = 7
    customers: int = 1000
    catalogue_size: int = 50
    malformed_share: float = 0.02
    duplicate_share: float = 0.01
    rate: float = 200.0  # events/s in continuous mode
    data_dir: Path = Path("relevanz-demo")
    stall_timeout_s: float = 60.0
    #: "embedded" (Tansu and SQLite) or "kafka-cassandra" (the real servers).
    stack: str = "embedded"
    #: Site visitors whose synthetic sessions (page views) go out besides the events.
    visitors: int = 1500


Progress = Callable[[str], None]


async def run_demo(settings: Settings, options: DemoOptions, progress: Progress,
                   stop: asyncio.Event | None = None, announce: Progress | None = None
                   ) -> dict[str, Any]:
    """Run the demo; returns the final counts.

    Without ``events`` it also serves the operator API and dashboard and tells
    ``announce`` (default: ``progress``) the dashboard URL and the tokens.
    """
    options.data_dir.mkdir(parents=True, exist_ok=True)
    stack = _real_stack if options.stack == "kafka-cassandra" else _embedded_stack
    with stack(settings, options.data_dir, progress) as settings:
        if settings.store_kind == "cassandra":
            await open_store(settings).migrate()
        if (options.events is not None
                and settings.session_idle_grace_s == Settings().session_idle_grace_s):
            # The bounded demo is a backfill published at once: its partitions' event
            # times run days apart, so sessions are ended when the traffic is over.
            settings = settings.with_(session_idle_grace_s=365 * 86400.0)
        worker = build_worker(settings)
        api = (await serve_for_demo(worker, announce or progress)
               if options.events is None else None)
        await worker.start()
        try:
            if options.events is None:
                return await _continuous(settings, options, worker.accounting.as_dict,
                                         progress, stop or asyncio.Event())
            return await _bounded(settings, options, worker, progress)
        finally:
            await worker.stop()
            if api is not None:
                await api.cleanup()


@contextlib.contextmanager
def _embedded_stack(settings: Settings, data_dir: Path, progress: Progress
                    ) -> Iterator[Settings]:
    """The embedded broker and a fresh embedded store in ``data_dir``."""
    store_path = data_dir / "store.db"
    for stale in data_dir.glob("store.db*"):
        # The embedded broker starts empty, so yesterday's ledger would only
        # misreport today's events as duplicates.
        stale.unlink()
    with EmbeddedBroker(data_dir / "broker.log") as broker:
        progress(f"embedded broker on {broker.bootstrap_servers}, store {store_path}, "
                 f"broker log {data_dir / 'broker.log'}")
        # The embedded broker fails aiokafka's InitProducerId (see the setting).
        yield _local(settings.with_(idempotent_producers=False), broker.bootstrap_servers,
                     f"embedded:{store_path}")


@contextlib.contextmanager
def _real_stack(settings: Settings, data_dir: Path, progress: Progress) -> Iterator[Settings]:
    """Apache Kafka and Apache Cassandra from Maven Central, fresh, in ``data_dir``.

    Started on this (the main) thread: each server is told to stop when the
    thread that started it ends.
    """
    kafka_dir, cassandra_dir = data_dir / "kafka", data_dir / "cassandra"
    for old in (kafka_dir, cassandra_dir):  # like the embedded stack: a fresh start
        shutil.rmtree(old, ignore_errors=True)
    progress("starting Apache Kafka and Apache Cassandra (Java 17, Maven; the first run "
             "downloads them into ~/.m2)")
    with KafkaServer(kafka_dir) as kafka, CassandraServer(cassandra_dir) as cassandra:
        progress(f"Apache Kafka on {kafka.bootstrap_servers} (ready in {kafka.started_in_s}s), "
                 f"Apache Cassandra on {cassandra.hosts} (ready in {cassandra.started_in_s}s); "
                 f"logs in {kafka.log_path} and {cassandra.log_path}")
        yield _local(settings, kafka.bootstrap_servers, cassandra.store_url("relevanz_demo"))


def _local(settings: Settings, servers: str, store_url: str) -> Settings:
    # A short session timeout makes the local consumer group form in about
    # 4 s instead of 16 s; nothing else shares this broker.
    return settings.with_(broker_servers=servers, store_url=store_url,
                          session_timeout_s=min(settings.session_timeout_s, 6.0),
                          heartbeat_s=min(settings.heartbeat_s, 1.0))


def demo_traffic(options: DemoOptions, n: int, live: bool = False) -> TrafficGenerator:
    """The demo's synthetic audience and traffic for ``n`` events (same options, same events).

    ``live`` (continuous mode): event time starts now and advances at ``rate``,
    so pending sends, proposals and their expiry happen in the operator's own
    time; a proposal in the dashboard can be approved before it expires.
    """
    if live:
        return TrafficGenerator(TrafficConfig(
            seed=options.seed, customers=options.customers,
            catalogue_size=options.catalogue_size, malformed_share=options.malformed_share,
            duplicate_share=options.duplicate_share, mean_gap_s=1.0 / options.rate,
            start=utc_now()))
    config = TrafficConfig(
        seed=options.seed, customers=options.customers, catalogue_size=options.catalogue_size,
        malformed_share=options.malformed_share, duplicate_share=options.duplicate_share,
    )
    # The same seed gives the same events, ids and results on every run: the
    # simulated period starts on a fixed date (a backfill, as event time allows)
    # unless it would reach into the future, and then it ends now.
    if config.start + config.span(n) > utc_now():
        config = TrafficConfig.ending_at(utc_now() - timedelta(minutes=1), n, **{
            k: getattr(config, k) for k in ("seed", "customers", "catalogue_size",
                                            "malformed_share", "duplicate_share")})
    return TrafficGenerator(config)


async def _bounded(settings: Settings, options: DemoOptions, worker: Worker,
                   progress: Progress) -> dict[str, Any]:
    n = options.events or 0
    generator = demo_traffic(options, n)
    messages = list(generator.messages(n))
    malformed = sum(1 for m in messages if m.malformed)
    duplicates = sum(1 for m in messages if m.duplicate)
    started = time.monotonic()

    # A shop has its catalogue before its traffic: publish the content items
    # first and let the worker learn them, so clicks find their topics.
    catalogue = [m for m in messages if m.topic == "content"]
    traffic = [m for m in messages if m.topic != "content"]
    # The site's page views besides (streams/sim/sessions.py): the worker's session
    # models are scored on them by progressive validation as they learn.
    site = SessionGenerator(session_config(options))
    page_views = list(site.messages())
    traffic += page_views
    expected = n + len(page_views)

    def publish(batch: list[Message]) -> None:
        publisher = Publisher(settings)
        for m in batch:
            publisher.send(m.topic, m.key, m.value)
        publisher.flush()

    accounting = worker.accounting
    await asyncio.to_thread(publish, catalogue)
    deadline = time.monotonic() + options.stall_timeout_s
    while accounting.events_in < len(catalogue) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    publishing = asyncio.create_task(asyncio.to_thread(publish, traffic))
    last_count, last_change, last_report = -1, time.monotonic(), 0.0
    while accounting.events_in < expected or not publishing.done():
        await asyncio.sleep(0.1)
        now = time.monotonic()
        if accounting.events_in != last_count:
            last_count, last_change = accounting.events_in, now
        elif now - last_change > options.stall_timeout_s:
            publishing.cancel()
            raise DemoStalled(
                f"only {accounting.events_in} of {expected} events accounted for; no progress for "
                f"{options.stall_timeout_s:g}s (see {options.data_dir / 'broker.log'})"
            )
        if now - last_report >= 1.0:
            progress(f"{accounting.events_in}/{expected} events: {accounting.applied} applied, "
                     f"{accounting.duplicates} duplicates, {accounting.dead_letters} dead letters")
            last_report = now
    await publishing  # surfaces a publishing error
    elapsed = time.monotonic() - started
    counts = accounting.as_dict()
    precision, recall = await _tag_quality(worker, generator)
    # Decision quality on the same audience and number of events (streams/sim/simulation.py);
    # after the throughput figures, so it does not slow them down.
    progress("measuring decision quality (engine, random and most-popular policies)")
    quality = await asyncio.to_thread(
        evaluate_policies, seed=options.seed, events=n, warmup=n // 6,
        customers=options.customers, catalogue_size=options.catalogue_size)
    # Campaign uplift needs customers who react to sends, which the published
    # traffic does not do: the same audience, simulated (streams/sim/campaign_sim.py).
    progress("measuring campaign uplift (simulated reactions to sends, holdout groups)")
    simulated = await asyncio.to_thread(
        evaluate_campaigns, seed=options.seed, events=n, warmup=n // 6,
        customers=options.customers, catalogue_size=options.catalogue_size,
        book=worker.campaigns)
    campaigns = simulated.pop("campaigns")
    return {
        **counts,
        **_session_quality(worker, site),
        "page_views_published": len(page_views),
        "capped": accounting.refused.get("capped", 0),
        **quality,
        "campaign_simulation": simulated,
        "campaigns": {cid: {"treated": c["treated"], "holdout": c["holdout"],
                            "uplift": c["uplift"]} for cid, c in campaigns.items()},
        "tag_changes": worker.stage.tag_changes if worker.stage else 0,
        "tag_precision": round(precision, 4),
        "tag_recall": round(recall, 4),
        "events_published": n,
        "injected_malformed": malformed,
        "injected_duplicates": duplicates,
        "balanced": accounting.balanced,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(accounting.events_in / elapsed, 1) if elapsed else 0.0,
    }


def session_config(options: DemoOptions) -> SessionConfig:
    """The demo's synthetic site sessions (same options, same page views).

    They start on a fixed date, as the events do, unless they would reach
    into the future; then they end a day ago.
    """
    config = SessionConfig(seed=options.seed, visitors=options.visitors)
    latest = utc_now() - timedelta(days=1)
    # Sessions spread over span; a visitor's later sessions come at most 9 days after.
    if config.start + config.span + timedelta(days=9) > latest:
        config = SessionConfig(seed=options.seed, visitors=options.visitors,
                               start=latest - config.span - timedelta(days=9))
    return config


def _session_quality(worker: Worker, site: SessionGenerator) -> dict[str, Any]:
    """The worker's session models, scored by progressive validation as they learnt.

    Sessions still open when the last page view was applied are ended first
    (their predictions scored): the demo's traffic has ended.
    """
    stage = worker.stage.sessions if worker.stage is not None else None
    if stage is None:
        return {}
    stage.end_open_sessions()
    return session_report(stage.models, site.truth)


async def _tag_quality(worker: Worker, generator: TrafficGenerator) -> tuple[float, float]:
    """Precision and recall of the stored tags against the audience's hidden interests.

    Only customers the engine has seen and may profile count: a customer with
    no events yet, or without consent to profiling, cannot carry tags.
    """
    assert worker.stage is not None
    rules = worker.stage.rules.customer.interests
    consent = worker.stage.rules.consent
    assigned: dict[str, set[str]] = {}
    async for state in worker.store.iter_customers(utc_now()):
        if consent.may_profile(state):
            assigned[state.customer_id] = set(state.tags)
    hidden = generator.truth.customers
    truth = {cid: true_tags(hidden[cid].interests, rules) for cid in assigned if cid in hidden}
    return tag_quality(assigned, truth)


async def _continuous(settings: Settings, options: DemoOptions,
                      counts: Callable[[], dict[str, Any]], progress: Progress,
                      stop: asyncio.Event) -> dict[str, Any]:
    generator = demo_traffic(options, 10_000_000, live=True)
    stream = generator.messages(10_000_000)
    publisher = Publisher(settings)
    # The site's page views go along, one per event, until the visitors' sessions
    # are all out, so the dashboard shows the session models learning too.
    pages = SessionGenerator(session_config(options)).messages()
    started = time.monotonic()
    sent, viewed, last_report = 0, 0, started
    while not stop.is_set():
        due = int((time.monotonic() - started) * options.rate)
        for message in stream:
            publisher.send(message.topic, message.key, message.value)
            sent += 1
            page = next(pages, None)
            if page is not None:
                publisher.send(page.topic, page.key, page.value)
                viewed += 1
            if sent >= due:
                break
        now = time.monotonic()
        if now - last_report >= 5.0:
            c = counts()
            progress(f"published {sent}; consumed {c['events_in']}: {c['applied']} applied, "
                     f"{c['duplicates']} duplicates, {c['dead_letters']} dead letters")
            last_report = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.1)
    await asyncio.to_thread(publisher.flush)
    return {**counts(), "events_published": sent, "page_views_published": viewed,
            "elapsed_s": round(time.monotonic() - started, 3)}
