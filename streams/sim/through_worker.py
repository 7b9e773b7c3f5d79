"""``relevanz evaluate --through-worker``: the same replay through the real pipeline.

The records are published to an embedded broker started for the run, a
worker (the ingest agent and the customer stage, with an embedded store in
a temporary directory) consumes them, and the predictions are read back
over HTTP from ``GET /v1/customers/{id}?as_of=CUTOFF`` of the operator API
served for the run with a token made for it.

The records go out one event time at a time (CDNOW has one time per day):
each slice is published, and the worker is waited for until it has
accounted for it, before the next.  The worker applies a batch in
event-time order and opens and labels the outcome models' examples on its
event-time watermark, the low watermark over the partitions it reads, so a
partition read ahead of another does not open examples before the other's
purchases are in, and the figures equal the in-process replay's.  Published
in one go the first 1,000 odd-id CDNOW customers gave the same line as well;
the slices stay, as they bound what a stalled run has left to account for.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from schemas.codec import encode
from schemas.records import ConsentChanged, Purchased, Record
from streams.errors import DemoStalled, InvalidTransactions
from streams.settings import Settings

#: Customers read back over HTTP at once.
_READERS = 8


def _topic(record: Record) -> str:
    if isinstance(record, ConsentChanged):
        return "consents"
    if isinstance(record, Purchased):
        return "purchases"
    raise InvalidTransactions(f"cannot publish a {type(record).__name__} in an evaluation")


async def replay_through_worker(settings: Settings, records: Sequence[Record],
                                customers: Sequence[str], cutoff: datetime,
                                progress: Callable[[str], None], stall_timeout_s: float = 120.0
                                ) -> tuple[dict[str, tuple[float, float]], Any]:
    """Publish ``records``, let a worker apply them, read each customer's predictions as of
    ``cutoff`` through the API.  Returns (purchase, churn) by customer and the forecaster."""
    import aiohttp

    from streams.api.auth import Tokens, generate_tokens
    from streams.api.web import bound_port, build_api, serve
    from streams.app import build_worker
    from streams.broker import EmbeddedBroker
    from streams.publish import Publisher

    with (tempfile.TemporaryDirectory(prefix="relevanz-evaluate-") as tmp,
          EmbeddedBroker(Path(tmp) / "broker.log") as broker):
        progress(f"embedded broker on {broker.bootstrap_servers}, a worker, the API")
        # As the demo: the embedded broker fails aiokafka's InitProducerId, and a short
        # session timeout lets the one consumer group form in seconds.
        run = settings.with_(
            broker_servers=broker.bootstrap_servers, idempotent_producers=False,
            store_url=f"embedded:{Path(tmp) / 'store.db'}",
            session_timeout_s=min(settings.session_timeout_s, 6.0),
            heartbeat_s=min(settings.heartbeat_s, 1.0), web_host="127.0.0.1", web_port=0)
        worker = build_worker(run)
        operator, viewer = generate_tokens()
        runner = await serve(build_api(worker, Tokens.from_lists(
            operators=[operator], viewers=[viewer])), run.web_host, 0)
        await worker.start()
        try:
            await _publish_in_slices(run, worker, records, progress, stall_timeout_s,
                                     Publisher)
            base = f"http://{run.web_host}:{bound_port(runner)}"
            served = await _read_back(base, viewer, customers, cutoff, progress, aiohttp)
            assert worker.stage is not None  # build_worker wires the customer stage
            return served, worker.stage.forecaster
        finally:
            await worker.stop()
            await runner.cleanup()


async def _publish_in_slices(settings: Settings, worker: Any, records: Sequence[Record],
                             progress: Callable[[str], None], stall_timeout_s: float,
                             publisher_type: Any) -> None:
    publisher = publisher_type(settings)
    accounting = worker.accounting
    sent, started, last_report = 0, time.monotonic(), 0.0
    slices = [list(g) for _, g in groupby(records, key=lambda r: r.occurred_at)]
    times = [r.occurred_at for r in records]
    if times != sorted(times):
        raise InvalidTransactions("the records to publish are not in event-time order")
    for number, batch in enumerate(slices, start=1):
        for record in batch:
            publisher.send(_topic(record), record.customer_id.encode(), encode(record))
        await asyncio.to_thread(publisher.flush)
        sent += len(batch)
        last_change, count = time.monotonic(), accounting.events_in
        while accounting.events_in < sent:
            await asyncio.sleep(0.01)
            if accounting.events_in != count:
                last_change, count = time.monotonic(), accounting.events_in
            elif time.monotonic() - last_change > stall_timeout_s:
                raise DemoStalled(f"the worker accounted for {accounting.events_in} of {sent} "
                                  f"events and made no progress for {stall_timeout_s:g}s")
        if accounting.dead_letters:
            raise InvalidTransactions(f"the worker dead-lettered {accounting.dead_letters} "
                                      "of the events")
        if time.monotonic() - last_report >= 2.0 or number == len(slices):
            last_report = time.monotonic()
            progress(f"through the worker: {sent}/{len(records)} events "
                     f"({last_report - started:.0f}s, event time {batch[0].occurred_at.date()})")


async def _read_back(base: str, token: str, customers: Sequence[str], cutoff: datetime,
                     progress: Callable[[str], None], aiohttp: Any
                     ) -> dict[str, tuple[float, float]]:
    served: dict[str, tuple[float, float]] = {}
    queue = list(reversed(customers))
    started, last_report = time.monotonic(), 0.0
    headers = {"Authorization": f"Bearer {token}"}

    async def reader(session: Any) -> None:
        nonlocal last_report
        while queue:
            cid = queue.pop()
            async with session.get(f"{base}/v1/customers/{cid}",
                                   params={"as_of": cutoff.isoformat()}) as answer:
                body = await answer.json()
                if answer.status != 200:
                    raise InvalidTransactions(f"GET /v1/customers/{cid} answered "
                                              f"{answer.status}: {body}")
            predictions = body.get("predictions") or {}
            served[cid] = (float(predictions.get("purchase", "nan")),
                           float(predictions.get("churn", "nan")))
            if time.monotonic() - last_report >= 2.0:
                last_report = time.monotonic()
                progress(f"read back {len(served)}/{len(customers)} customers "
                         f"({last_report - started:.0f}s)")

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(reader(session) for _ in range(_READERS)))
    return served
