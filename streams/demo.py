"""``relevanz demo``: the whole engine on one machine with zero set-up.

Starts the embedded broker, a fresh embedded store and a worker in this
process, publishes synthetic traffic and reports where every event went.
With ``events`` set it stops once all of them are accounted for and returns
the counts; without, it keeps generating traffic at ``rate`` until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from streams.app import build_worker, utc_now
from streams.broker import EmbeddedBroker
from streams.errors import RelevanzError
from streams.publish import Publisher
from streams.settings import Settings
from streams.traffic import TrafficConfig, TrafficGenerator

log = structlog.get_logger(__name__)


class DemoStalled(RelevanzError):
    """The worker stopped making progress before every event was accounted for."""


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


Progress = Callable[[str], None]


async def run_demo(settings: Settings, options: DemoOptions, progress: Progress,
                   stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Run the demo; returns the final counts."""
    options.data_dir.mkdir(parents=True, exist_ok=True)
    store_path = options.data_dir / "store.db"
    for stale in options.data_dir.glob("store.db*"):
        # The embedded broker starts empty, so yesterday's ledger would only
        # misreport today's events as duplicates.
        stale.unlink()
    with EmbeddedBroker(options.data_dir / "broker.log") as broker:
        # A short session timeout makes the local consumer group form in about
        # 4 s instead of 16 s; nothing else shares this broker.
        settings = settings.with_(broker_servers=broker.bootstrap_servers,
                                  store_url=f"embedded:{store_path}",
                                  session_timeout_s=min(settings.session_timeout_s, 6.0),
                                  heartbeat_s=min(settings.heartbeat_s, 1.0))
        progress(f"embedded broker on {broker.bootstrap_servers}, store {store_path}, "
                 f"broker log {options.data_dir / 'broker.log'}")
        worker = build_worker(settings)
        await worker.start()
        try:
            if options.events is None:
                return await _continuous(settings, options, worker.accounting.as_dict,
                                         progress, stop or asyncio.Event())
            return await _bounded(settings, options, worker, progress)
        finally:
            await worker.stop()


def _generator(options: DemoOptions, n: int) -> TrafficGenerator:
    gap_s = 1.0
    start = utc_now() - timedelta(seconds=gap_s * n) - timedelta(hours=1)
    return TrafficGenerator(TrafficConfig(
        seed=options.seed, customers=options.customers, catalogue_size=options.catalogue_size,
        malformed_share=options.malformed_share, duplicate_share=options.duplicate_share,
        start=start, mean_gap_s=gap_s,
    ))


async def _bounded(settings: Settings, options: DemoOptions, worker: Any,
                   progress: Progress) -> dict[str, Any]:
    n = options.events or 0
    messages = list(_generator(options, n).messages(n))
    malformed = sum(1 for m in messages if m.malformed)
    duplicates = sum(1 for m in messages if m.duplicate)
    started = time.monotonic()

    def publish() -> None:
        publisher = Publisher(settings)
        for m in messages:
            publisher.send(m.topic, m.key, m.value)
        publisher.flush()

    publishing = asyncio.create_task(asyncio.to_thread(publish))
    accounting = worker.accounting
    last_count, last_change, last_report = -1, time.monotonic(), 0.0
    while accounting.events_in < n or not publishing.done():
        await asyncio.sleep(0.1)
        now = time.monotonic()
        if accounting.events_in != last_count:
            last_count, last_change = accounting.events_in, now
        elif now - last_change > options.stall_timeout_s:
            publishing.cancel()
            raise DemoStalled(
                f"only {accounting.events_in} of {n} events accounted for; no progress for "
                f"{options.stall_timeout_s:g}s (see {options.data_dir / 'broker.log'})"
            )
        if now - last_report >= 1.0:
            progress(f"{accounting.events_in}/{n} events: {accounting.applied} applied, "
                     f"{accounting.duplicates} duplicates, {accounting.dead_letters} dead letters")
            last_report = now
    await publishing  # surfaces a publishing error
    elapsed = time.monotonic() - started
    counts = accounting.as_dict()
    return {
        **counts,
        "events_published": n,
        "injected_malformed": malformed,
        "injected_duplicates": duplicates,
        "balanced": accounting.balanced,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(accounting.events_in / elapsed, 1) if elapsed else 0.0,
    }


async def _continuous(settings: Settings, options: DemoOptions,
                      counts: Callable[[], dict[str, Any]], progress: Progress,
                      stop: asyncio.Event) -> dict[str, Any]:
    generator = _generator(options, 10_000_000)
    stream = generator.messages(10_000_000)
    publisher = Publisher(settings)
    started = time.monotonic()
    sent, last_report = 0, started
    while not stop.is_set():
        due = int((time.monotonic() - started) * options.rate)
        for message in stream:
            publisher.send(message.topic, message.key, message.value)
            sent += 1
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
    return {**counts(), "events_published": sent,
            "elapsed_s": round(time.monotonic() - started, 3)}
