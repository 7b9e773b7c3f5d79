"""Soak test (opt-in, not in CI): a worker under steady load for minutes, memory flat.

    .venv/bin/python -m tests.soak.soak                      # 5 minutes at 1,400 events/s
    .venv/bin/python -m tests.soak.soak --minutes 1 --rate 500 --out-dir /tmp/soak

It starts the embedded broker, a ``relevanz worker`` process on a fresh
embedded store and publishes synthetic traffic (seed 7) at a fixed rate,
about half of the pipeline's maximum by default (README, Performance).  Every
10 s it samples the worker's resident memory (``VmRSS``) and its
``worker_progress`` counts; at the end it waits until every offset is
committed, stops the worker with SIGTERM and checks its final accounting.

The audience is small (2,000 customers, histories capped at 50 entries) so
that the per-customer state, which the worker caches, approaches its
bounds (history entries, the 20 latest click times per interest topic)
within minutes rather than hours; it still grows during a 5-minute run
(see the README, "Soak"), and the summary reports how much state the store
holds at the end.  "Flat" is measured from the end of the warm-up
(``--warmup-s``) to the end.  Exit status 0 when the worker kept up, the
counts balance and RSS grew by at most ``--max-growth`` (a fraction) after
the warm-up; 1 otherwise.  The samples go to ``soak.csv`` and the summary,
one JSON line, to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.topics import INPUT_TOPICS
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from streams.sim.traffic import TrafficConfig, TrafficGenerator
from streams.store.embedded import EmbeddedStore
from streams.topics import ensure_topics

RELEVANZ = str(Path(sys.executable).parent / "relevanz")
SAMPLE_S = 10.0


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def committed(settings: Settings) -> int:
    consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                         "group.id": settings.consumer_group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(settings.topic(t.name), p)
                      for t in INPUT_TOPICS for p in range(settings.partitions)]
        return sum(tp.offset for tp in consumer.committed(partitions, timeout=15)
                   if tp.offset >= 0)
    finally:
        consumer.close()


async def stored_state(settings: Settings) -> tuple[int, int, float]:
    """Customers, history entries and MB of Python objects of every stored customer state.

    That is what the worker's cache holds once it has seen every customer
    (the cache's bound, 100,000 customers, is far above the soak's audience).
    """
    store = EmbeddedStore(settings.store_path)
    await store.open()
    try:
        tracemalloc.start()
        states = [s async for s in store.iter_customers(datetime.now(UTC))]
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        await store.close()
    return len(states), sum(len(s.history) for s in states), size / 1e6


def log_events(path: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            found.append(entry)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1400.0, help="events per second")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--history-max", type=int, default=50)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--max-growth", type=float, default=0.10,
                        help="largest allowed RSS growth after the warm-up, as a fraction")
    parser.add_argument("--out-dir", type=Path, default=Path("relevanz-soak"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    duration_s = args.minutes * 60
    total = int(args.rate * duration_s)
    with EmbeddedBroker(args.out_dir / "broker.log") as broker:
        settings = Settings(broker_servers=broker.bootstrap_servers,
                            store_url=f"embedded:{args.out_dir / 'store.db'}",
                            topic_prefix="soak.", consumer_group="relevanz-soak",
                            idempotent_producers=False)
        store_file = settings.store_path
        for leftover in store_file.parent.glob(store_file.name + "*"):
            leftover.unlink()
        ensure_topics(settings)
        env = {**os.environ,
               "RELEVANZ_BROKER_URL": f"kafka://{settings.broker_servers}",
               "RELEVANZ_STORE_URL": settings.store_url,
               "RELEVANZ_TOPIC_PREFIX": settings.topic_prefix,
               "RELEVANZ_CONSUMER_GROUP": settings.consumer_group,
               "RELEVANZ_HISTORY_MAX": str(args.history_max),
               "RELEVANZ_WEB_PORT": "0", "RELEVANZ_LOG_FORMAT": "json",
               "RELEVANZ_IDEMPOTENT_PRODUCERS": "false"}
        worker_log = args.out_dir / "worker.log"
        with worker_log.open("wb") as log_file:
            worker = subprocess.Popen([RELEVANZ, "worker"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=log_file)
            try:
                return _soak(args, settings, worker, worker_log, total, duration_s)
            finally:
                if worker.poll() is None:
                    worker.kill()


def _soak(args: argparse.Namespace, settings: Settings, worker: subprocess.Popen[bytes],
          worker_log: Path, total: int, duration_s: float) -> int:
    deadline = time.monotonic() + 60
    while not log_events(worker_log, "worker_started"):
        if worker.poll() is not None or time.monotonic() > deadline:
            print(f"soak: the worker did not start; see {worker_log}", file=sys.stderr)
            return 1
        time.sleep(0.2)

    config = TrafficConfig.ending_at(datetime.now(UTC), total, seed=7,
                                     customers=args.customers, catalogue_size=200)
    messages = TrafficGenerator(config).messages(total)
    producer = Producer({"bootstrap.servers": settings.broker_servers, "acks": "all",
                         "linger.ms": 20})
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    next_sample = start
    sent = 0
    while sent < total:
        now = time.monotonic()
        due = min(total, int((now - start) * args.rate) + 1)
        for m in messages:
            producer.produce(settings.topic(m.topic), key=m.key, value=m.value)
            sent += 1
            if sent >= due:
                break
        producer.poll(0)
        if now >= next_sample:
            samples.append(_sample(worker.pid, worker_log, now - start, sent))
            print(f"soak: {samples[-1]}", file=sys.stderr)
            next_sample += SAMPLE_S
        time.sleep(0.01)
    producer.flush(60)
    publish_s = time.monotonic() - start

    # Wait for the worker to commit everything, then stop it as an orchestrator would.
    catch_up = time.monotonic() + 120
    while committed(settings) < total and time.monotonic() < catch_up:
        time.sleep(1.0)
    lag_s = time.monotonic() - start - publish_s
    samples.append(_sample(worker.pid, worker_log, time.monotonic() - start, sent))
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(60)
    final = (log_events(worker_log, "worker_stopped") or [{}])[-1]

    with (args.out_dir / "soak.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    warm = [s for s in samples if s["t_s"] >= args.warmup_s] or samples
    rss_start, rss_end = warm[0]["rss_mb"], samples[-1]["rss_mb"]
    growth = (rss_end - rss_start) / rss_start
    customers, history, state_mb = asyncio.run(stored_state(settings))
    balanced = final.get("events_in") == total and final.get("events_in") == (
        final.get("applied", 0) + final.get("duplicates", 0) + final.get("dead_letters", 0))
    summary = {
        "events": total, "rate": args.rate, "minutes": args.minutes,
        "published_in_s": round(publish_s, 1), "caught_up_after_s": round(lag_s, 1),
        "rss_mb_first": samples[0]["rss_mb"], "rss_mb_after_warmup": rss_start,
        "rss_mb_end": rss_end, "rss_mb_max": max(s["rss_mb"] for s in samples),
        "rss_growth_after_warmup": round(growth, 3), "exit_code": code,
        "stored_customers": customers, "stored_history_entries": history,
        "stored_state_mb": round(state_mb, 1),
        "balanced": balanced, "final": {k: final.get(k) for k in (
            "events_in", "applied", "duplicates", "dead_letters", "clean")},
    }
    print(json.dumps(summary))
    kept_up = lag_s < 30
    return 0 if (code == 0 and balanced and kept_up and growth <= args.max_growth) else 1


def _sample(pid: int, worker_log: Path, t_s: float, sent: int) -> dict[str, float]:
    progress = log_events(worker_log, "worker_progress")
    consumed = progress[-1]["events_in"] if progress else 0
    return {"t_s": round(t_s, 1), "rss_mb": round(rss_mb(pid), 1), "published": sent,
            "consumed": consumed}


if __name__ == "__main__":
    sys.exit(main())
