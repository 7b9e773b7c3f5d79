"""``POST /v1/decide`` latency at a fixed request rate, for ``relevanz bench``.

A worker as deployed (:func:`streams.app.build_worker`) serves the operator
API on a free local port, on the store the pipeline stage filled, with the
catalogue read from the topic.  Another process (so that the load generator
does not take the worker's interpreter lock) sends requests open-loop: the
i-th request is due at ``start + i / rate`` whatever happened to the ones
before, and its latency runs from when it was due to when its answer was
read.  A slow answer therefore also counts against the requests queued
behind it (no coordinated omission).  Customers are drawn from the traffic's
audience, so most have a stored profile and some are unknown; channel and
slot are drawn from what the catalogue offers.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agents.core.visitors import VisitorRules, VisitorState, apply_page_view, expires_at
from schemas.records import PageView
from streams.api.auth import Tokens, generate_tokens
from streams.api.web import bound_port, build_api, serve
from streams.app import Worker, build_worker, utc_now
from streams.bench.stages import Progress
from streams.settings import Settings

#: The issue's figure: p99 below this at :data:`RATE` requests/s.
TARGET_P99_MS = 20.0
RATE = 200.0
#: Channel and slot pairs the synthetic catalogue offers (see streams/sim/traffic.py).
TOUCHPOINTS = (("web", "landing-page"), ("web", "web-banner"), ("email", "newsletter-block"),
               ("push", "app-card"))


@dataclass(frozen=True)
class DecideLatency:
    """What the decide load measured."""

    rate: float
    requests: int
    answered: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


async def measure_decide(settings: Settings, store_path: Path, progress: Progress,
                         seconds: float = 10.0, rate: float = RATE, audience: int = 2000,
                         store_url: str | None = None
                         ) -> tuple[DecideLatency, DecideLatency]:
    """Serve the API of a worker on ``store_path`` (or ``store_url``) and load it with
    decide requests.

    ``settings`` name the consumer group that already consumed the topics, so
    the worker has nothing to catch up on while it answers.  Returns the
    latency for customers and then, in a second run at the same rate, for a
    session of an anonymous visitor after one page view (its profile stored
    as the worker stores it).
    """
    settings = settings.with_(store_url=store_url or f"embedded:{store_path}")
    worker = build_worker(settings)
    operator, viewer = generate_tokens()
    await worker.start()
    customer_ids: list[str] = []
    async for state in worker.store.iter_customers(utc_now()):
        customer_ids.append(state.customer_id)
        if len(customer_ids) >= audience:
            break
    customer_ids += [f"unknown-{i}" for i in range(max(1, len(customer_ids) // 20))]
    runner = await serve(build_api(worker, Tokens.from_lists(operators=[operator],
                                                             viewers=[viewer])),
                         "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}/v1/decide"
        n = max(1, round(rate * seconds))
        progress(f"decide: {n} requests at {rate:,.0f}/s to POST /v1/decide")
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            samples, errors = await asyncio.get_running_loop().run_in_executor(
                pool, load_decide, url, viewer, customer_ids, n, rate)
            await _one_page_view(worker, SESSION_VISITOR)
            progress(f"decide: {n} session requests at {rate:,.0f}/s for an anonymous visitor")
            session = await asyncio.get_running_loop().run_in_executor(
                pool, load_decide, url, viewer, [SESSION_VISITOR], n, rate, True)
    finally:
        await runner.cleanup()
        await worker.stop()
    return _latency(rate, n, samples, errors), _latency(rate, n, *session)


#: The anonymous visitor of the session decide run.
SESSION_VISITOR = "bench-visitor"


async def _one_page_view(worker: Worker, visitor_id: str) -> None:
    """Store ``visitor_id`` as one consented page view of a catalogue item leaves it."""
    now = utc_now()
    catalogue = worker.catalogue.items.values() if worker.catalogue is not None else []
    items = sorted(catalogue, key=lambda i: i.content_id)
    item = items[0] if items else None
    view = PageView(event_id="bench-view-1", visitor_id=visitor_id, occurred_at=now,
                    schema_version=1, session_id="bench-session",
                    url="https://shop.example/bench", page_type="product", device="mobile",
                    content_id=item.content_id if item else None, engagement_seconds=40.0,
                    consent=["profiling"])
    rules = VisitorRules()
    state = apply_page_view(VisitorState(visitor_id), view,
                            list(item.topics) if item else None, rules).state
    await worker.store.save_visitor_profiles([(state, expires_at(state, rules) or now)], now)


def _latency(rate: float, n: int, samples: list[float], errors: int) -> DecideLatency:
    if not samples:
        return DecideLatency(rate, n, 0, errors, 0.0, 0.0, 0.0, 0.0)
    ordered = sorted(samples)
    cuts = (statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1
            else [ordered[0]] * 99)
    return DecideLatency(rate, n, len(ordered), errors, cuts[49], cuts[94], cuts[98],
                         ordered[-1])


def load_decide(url: str, token: str, customer_ids: list[str], n: int, rate: float,
                sessions: bool = False) -> tuple[list[float], int]:
    """Send ``n`` requests open-loop at ``rate``/s; latencies in ms, and the failures.

    With ``sessions`` the ids are visitors and each request asks for a session's
    next best action.  Runs in a process of its own (see :func:`measure_decide`).
    """
    return asyncio.run(_load(url, token, customer_ids, n, rate, sessions))


async def _load(url: str, token: str, customer_ids: list[str], n: int, rate: float,
                sessions: bool = False) -> tuple[list[float], int]:
    import aiohttp

    rng = random.Random(7)
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(due: float, body: dict[str, str]) -> None:
            nonlocal errors
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    ok = response.status in (200, 404)  # 404: no item fits, still an answer
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

        # A few requests first so connections and caches are warm, not measured.
        for cid in customer_ids[:20]:
            async with session.post(url, json={"customer_id": cid, "channel": "web",
                                               "slot": "landing-page"}) as response:
                await response.read()
        start = time.perf_counter() + 0.2
        tasks = []
        for i in range(n):
            channel, slot = rng.choice(TOUCHPOINTS)
            body = ({"visitor_id": rng.choice(customer_ids), "session_id": "bench-session",
                     "touchpoint": slot} if sessions else
                    {"customer_id": rng.choice(customer_ids), "channel": channel, "slot": slot})
            tasks.append(asyncio.create_task(one(start + i / rate, body)))
        await asyncio.gather(*tasks)
    return latencies, errors
