"""Faust's Kafka consumers with a short fetch wait (checked against faust-streaming 0.15.3).

Faust's aiokafka driver creates its consumer in the private
``faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer``
with ``fetch_max_wait_ms`` fixed at 1,500 ms and no setting to change it;
the embedded broker does not answer a waiting fetch early, so every quiet
moment cost up to 1.5 s of latency.  :func:`use_fetch_wait` wraps that
method so the consumer it creates gets ``RELEVANZ_FETCH_WAIT_MS`` in the
private ``_fetch_max_wait_ms`` before it starts (aiokafka reads it when it
starts its fetcher).  Check both names when upgrading Faust or aiokafka.

Why it stays (measured; see also the README's Performance section): two
alternating pairs of ``relevanz bench --events 100000`` gave an
event-to-decision p99 at half load of 141 and 345 ms with a 20 ms wait
against 526 and 781 ms at 100 ms, and the bare-Faust floor's p99 38-45 ms
against 73-77 ms, at the same pipeline throughput.  Faust's own 1,500 ms,
measured with the module isolated (``relevanz bench --events 10000
--customers 2000 --latency-seconds 3``, without the wrap against with it):
event-to-decision p50 854 ms (p99 1,419 ms) against 19-111 ms (84-416 ms),
and the bare-Faust floor's p50 348 ms against 11-18 ms.
"""

from __future__ import annotations

from typing import Any


def use_fetch_wait(wait_ms: int) -> None:
    """Make Faust's Kafka consumers wait at most ``wait_ms`` for a fetch to fill.

    Calling it again replaces the wait (the original method is kept once).
    """
    from faust.transport.drivers import aiokafka as driver

    create = getattr(driver.AIOKafkaConsumerThread, "_relevanz_original", None)
    if create is None:
        create = driver.AIOKafkaConsumerThread._create_worker_consumer
        driver.AIOKafkaConsumerThread._relevanz_original = create  # type: ignore[attr-defined] # kept for re-use

    def with_wait(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = with_wait  # type: ignore[method-assign] # see above
