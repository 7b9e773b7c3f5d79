"""``/metrics``: the worker's status in Prometheus text format (prometheus-client).

A custom collector turns :meth:`streams.api.status.Monitor.snapshot` into metric
families at scrape time, so ``/metrics`` and ``/v1/status`` never disagree;
next to it are the worker's latency histograms and the standard process,
platform and garbage-collector collectors (:mod:`streams.instruments`), all
in registries of the worker's own (no global state).  Counts are counters
since the worker started (``rate()`` makes them rates; no rate is
precomputed), latencies are histograms, and every label takes its values
from a set fixed by the code or the contracts, never from message content.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streams.api.status import Monitor

#: The content type Prometheus expects for the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatusCollector(Collector):
    """Metric families read from one :class:`Monitor` at each scrape."""

    def __init__(self, monitor: Monitor):
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        """Every metric of the worker."""
        status = self.monitor.snapshot()
        yield InfoMetricFamily("relevanz_build", "Relevanz version and consumer group",
                               value={"version": status["version"],
                                      "consumer_group": status["consumer_group"]})
        yield _gauge("relevanz_ready", "1 when the worker is ready (see /ready)",
                     1 if status["ready"] else 0)
        counts: dict[str, Any] = status["counts"]
        events = CounterMetricFamily("relevanz_events", "Input messages consumed, by outcome",
                                     labels=["outcome"])
        for outcome, key in (("applied", "applied"), ("duplicate", "duplicates"),
                             ("dead_letter", "dead_letters")):
            events.add_metric([outcome], counts[key])
        yield events
        yield CounterMetricFamily("relevanz_decisions", "Personalisation decisions made",
                                  value=counts["decisions"])
        yield CounterMetricFamily("relevanz_send_triggers", "Send triggers emitted",
                                  value=counts["send_triggers"])
        by_field = CounterMetricFamily(
            "relevanz_dead_letters_by_field",
            "Dead letters by input topic and the contract field that broke "
            "(message: the whole message; other: a field the contract does not name)",
            labels=["topic", "field"])
        for topic, counts in status["dead_letters"]["by_topic"].items():
            for name, count in counts.items():
                by_field.add_metric([topic, name], count)
        yield by_field
        yield from _partition_metrics(status["partitions"])
        store = status["store"]
        yield _gauge("relevanz_store_up", "1 when the store answered its last probe",
                     1 if store["reachable"] else 0)
        if store["latency_ms"] is not None:
            yield _gauge("relevanz_store_latency_seconds",
                         "Round trip of the latest store probe (every call: "
                         "relevanz_store_call_seconds)", store["latency_ms"] / 1000)
        tags = status["interest_tags"]
        yield CounterMetricFamily("relevanz_interest_tag_changes",
                                  "Interest tags assigned or removed", value=tags["tag_changes"])
        yield _gauge("relevanz_cached_customers", "Customers cached in memory",
                     tags["cached_customers"])
        clock = status["event_time"]
        if clock is not None:
            yield CounterMetricFamily(
                "relevanz_late_events", "Events read dated before the event-time watermark "
                "(examples, decision windows and win-back checks it passed missed them)",
                value=clock["late_events"])
        controls = status["controls"]
        if controls is not None:
            yield _gauge("relevanz_paused", "1 while the kill switch is on",
                         1 if controls["paused"] else 0)
            yield _gauge("relevanz_paused_campaigns", "Campaigns paused one by one",
                         len(controls["paused_campaigns"]))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _partition_metrics(partitions: list[dict[str, Any]]) -> Iterator[Metric]:
    yield _gauge("relevanz_assigned_partitions", "Partitions assigned to this worker",
                 len(partitions))
    families = {
        "lag": GaugeMetricFamily("relevanz_consumer_lag",
                                 "End offset minus committed offset",
                                 labels=["topic", "partition"]),
        "end_offset": GaugeMetricFamily("relevanz_partition_end_offset",
                                        "Offset after the last message in the partition",
                                        labels=["topic", "partition"]),
        "committed_offset": GaugeMetricFamily("relevanz_committed_offset",
                                              "Offset the consumer group has committed",
                                              labels=["topic", "partition"]),
    }
    for row in partitions:
        for key, family in families.items():
            if row[key] is not None:
                family.add_metric([row["topic"], str(row["partition"])], row[key])
    yield from families.values()


def render(monitor: Monitor) -> bytes:
    """The Prometheus text exposition of ``monitor``'s worker."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(monitor))
    registry.register(monitor.worker.instruments.registry)
    return generate_latest(registry)
