"""Latency histograms and the process collectors of one worker, in a registry of its own.

``/metrics`` (:mod:`streams.api.metrics`) renders this registry next to the
figures read from the worker's status at scrape time.  Everything here is
observed where it happens, so Prometheus can aggregate it across workers
(``histogram_quantile(0.99, sum by (le) (rate(..._bucket[5m])))``):

- ``relevanz_batch_seconds``: handling one ingest batch, from its first
  attempt until its outputs are handed to the producer (store retries included);
- ``relevanz_event_to_output_seconds``: per input message, from its broker
  timestamp until its batch's decisions and triggers are handed to the producer;
- ``relevanz_store_call_seconds{call}``: every call of the worker's store;
- ``relevanz_http_request_seconds{route}``: every operator API request by route
  (``/v1/decide`` is the decide latency);
- ``relevanz_offset_commit_seconds`` and ``relevanz_rebalances_total``: from a
  Faust sensor;
- ``process_*``, ``python_info`` and ``python_gc_*``: prometheus-client's
  standard collectors.

Labels are bounded: store calls are the store protocol's methods, routes the
API's route templates (anything else is ``other``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

import faust
from aiohttp import web
from faust.types import AppT, ConsumerT, EventT
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from streams.store import Store

#: Seconds; from a fast in-memory call to a slow batch under store retries.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds from an event's broker timestamp to its outputs: up to minutes behind (lag).
EVENT_AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                     60.0, 300.0, 900.0)


class Handled(Protocol):
    """What :meth:`Instruments.batch_handled` reads of a handled batch
    (:class:`agents.ingest.HandledBatch`, which this tier cannot import)."""

    @property
    def events(self) -> Sequence[EventT[Any]]: ...

    @property
    def seconds(self) -> float: ...


class Instruments:
    """The histograms and counters a worker observes, and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.batch_seconds = Histogram(
            "relevanz_batch_seconds", "Handling of one ingest batch, store retries included",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.event_to_output_seconds = Histogram(
            "relevanz_event_to_output_seconds",
            "From an input message's broker timestamp until its batch's outputs "
            "(decisions, send triggers) are handed to the producer",
            buckets=EVENT_AGE_BUCKETS, registry=self.registry)
        self.store_call_seconds = Histogram(
            "relevanz_store_call_seconds", "Calls of the store, by method",
            labelnames=["call"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.http_request_seconds = Histogram(
            "relevanz_http_request_seconds", "Operator API requests, by route template",
            labelnames=["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.offset_commit_seconds = Histogram(
            "relevanz_offset_commit_seconds", "Offset commits of the consumer (Faust sensor)",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rebalances = Counter(
            "relevanz_rebalances", "Consumer group rebalances this worker went through",
            registry=self.registry)

    def batch_handled(self, batch: Handled) -> None:
        """Observe one handled batch (a hook of the ingest agent)."""
        self.batch_seconds.observe(batch.seconds)
        now = time.time()
        observe = self.event_to_output_seconds.observe
        for event in batch.events:
            timestamp = event.message.timestamp
            if timestamp:
                observe(max(now - timestamp, 0.0))

    def http_middleware(self) -> Any:
        """aiohttp middleware observing every request under its route template."""
        histogram = self.http_request_seconds

        @web.middleware
        async def timed(request: web.Request, handler: Any) -> web.StreamResponse:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "other"
            started = time.perf_counter()
            try:
                return cast(web.StreamResponse, await handler(request))
            finally:
                histogram.labels(route).observe(time.perf_counter() - started)

        return timed

    def sensor(self) -> faust.Sensor:
        """A Faust sensor feeding the commit and rebalance figures (add it to ``app.sensors``)."""
        return _FaustSensor(self)

    def timed(self, store: Store) -> Store:
        """``store`` with every coroutine method's duration observed by method name."""
        return cast(Store, _TimedStore(store, self.store_call_seconds))


class _FaustSensor(faust.Sensor):
    def __init__(self, instruments: Instruments) -> None:
        super().__init__()
        self.instruments = instruments

    def on_commit_initiated(self, consumer: ConsumerT) -> Any:
        return time.monotonic()

    def on_commit_completed(self, consumer: ConsumerT, state: Any) -> None:
        self.instruments.offset_commit_seconds.observe(time.monotonic() - state)

    def on_rebalance_start(self, app: AppT) -> dict[Any, Any]:
        self.instruments.rebalances.inc()
        return {}


class _TimedStore:
    """A store proxy that times each awaited call; every other attribute passes through.

    The wrapper of a method is made once and kept; it looks the method up on
    the wrapped store at every call, so the proxy adds nothing but the timing
    (about two microseconds per call).
    """

    def __init__(self, store: Store, histogram: Histogram) -> None:
        self._store = store
        self._histogram = histogram

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name.startswith("_") or not callable(attribute):
            return attribute
        store = self._store
        observe = self._histogram.labels(name).observe

        def timed(*args: Any, **kwargs: Any) -> Any:
            result = getattr(store, name)(*args, **kwargs)
            if not asyncio.iscoroutine(result):
                return result
            return _observed(result, observe)

        self.__dict__[name] = timed  # found without __getattr__ from now on
        return timed


async def _observed(call: Awaitable[Any], observe: Callable[[float], None]) -> Any:
    started = time.perf_counter()
    try:
        return await call
    finally:
        observe(time.perf_counter() - started)
