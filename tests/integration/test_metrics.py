"""``/metrics`` of a real worker on the embedded broker: what Prometheus would scrape."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.codec import pack
from streams.api.metrics import render
from streams.api.status import Monitor
from streams.api.web import bound_port, build_api, serve
from streams.app import Worker
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from streams.sim.traffic import TrafficConfig, TrafficGenerator
from tests.harness import eventually, eventually_async, isolated_settings, produce_raw
from tests.integration.conftest import stop_or_explain

VIEWER = "viewer-token-0123456789ab"


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path, viewer_tokens=(VIEWER,))


def malformed(n: int, rng: random.Random) -> list[tuple[str, bytes, bytes]]:
    """Messages that break the contract under field names a sender made up."""
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    out = []
    for _ in range(n):
        made_up = f"x-{rng.getrandbits(64):016x}"
        click = {"event_id": made_up, "customer_id": "c1", "schema_version": 1,
                 "occurred_at": at, "content_id": "n1", made_up: 1}
        profile = {"event_id": made_up, "customer_id": "c1", "schema_version": 1,
                   "occurred_at": at, "locale": "de-DE", "language": "de",
                   "time_zone": "Europe/Berlin", "attributes": {made_up: [1]}}
        out.append(("clicks", b"c1", pack(click)))
        out.append(("profiles", b"c1", pack(profile)))
    return out


def series(worker: Worker) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every time series (name and labels) of the worker's ``/metrics``."""
    text = render(Monitor(worker)).decode()
    return {(s.name, tuple(sorted(s.labels.items())))
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_dead_letters_under_made_up_field_names_add_no_series(
    worker: Worker, settings: Settings
) -> None:
    rng = random.Random(24)
    produce_raw(settings, malformed(5, rng))
    await eventually(lambda: worker.accounting.dead_letters >= 10, 60, "ten dead letters")
    # Per-partition offsets appear with the first commit: wait for it (a bounded set too).
    await eventually(lambda: len({labels for name, labels in series(worker)
                                  if name == "relevanz_committed_offset"}) == 2,
                     30, "the offsets of both topics to be committed")
    after_ten = series(worker)

    produce_raw(settings, malformed(5_000, rng))
    await eventually(lambda: worker.accounting.dead_letters >= 10_010, 180,
                     "10,010 dead letters")
    after_many = series(worker)

    assert after_many == after_ten
    labels = {dict(labels).get("field") for name, labels in after_many
              if name == "relevanz_dead_letters_by_field_total"}
    assert labels == {"other", "attributes"}
    assert worker.accounting.dead_letters_by_reason == {
        "clicks": {"other": 5_005}, "profiles": {"attributes": 5_005}}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scraped_after_traffic(worker: Worker, settings: Settings) -> Samples:
    """``/metrics`` over HTTP once 200 events, a decide request and a commit went by."""
    config = TrafficConfig.ending_at(datetime.now(UTC), 200, customers=20, catalogue_size=5,
                                     malformed_share=0.0, duplicate_share=0.0, seed=3)
    produce_raw(settings, [(m.topic, m.key, m.value)
                           for m in TrafficGenerator(config).messages(200)])
    await eventually(lambda: worker.accounting.applied >= 200, 60, "200 events")

    runner = await serve(build_api(worker), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(runner)}"
    headers = {"Authorization": f"Bearer {VIEWER}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{base}/v1/decide", json={
                    "customer_id": "c1", "channel": "web", "slot": "web-banner"}) as answer:
                await answer.read()

            scraped: Samples = {}

            async def committed() -> bool:
                nonlocal scraped
                async with http.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    scraped = samples(await response.text())
                return scraped.get(("relevanz_offset_commit_seconds_count", ()), 0) > 0

            await eventually_async(committed, 30, "an offset commit", poll_s=0.3)
    finally:
        await stop_or_explain(runner.cleanup(), "the API to stop")
    return scraped


async def test_metrics_are_counters_histograms_and_the_standard_collectors(
    worker: Worker, settings: Settings
) -> None:
    scraped = await scraped_after_traffic(worker, settings)

    def value(name: str, **labels: str) -> float:
        return scraped.get((name, tuple(sorted(labels.items()))), 0.0)

    names = {name for name, _ in scraped}
    assert not any(name.endswith("_per_second") for name in names)
    assert value("relevanz_events_total", outcome="applied") == 200
    assert value("relevanz_batch_seconds_count") >= 1
    # Every consumed message's age is observed once its batch's outputs are handed on.
    assert value("relevanz_event_to_output_seconds_count") == 200
    # In seconds, from the broker's timestamp (milliseconds would read as 0 or years).
    assert 0 < value("relevanz_event_to_output_seconds_sum") / 200 < 60
    assert value("relevanz_store_call_seconds_count", call="seen_events") >= 1
    assert value("relevanz_http_request_seconds_count", route="/v1/decide") == 1
    assert value("relevanz_rebalances_total") >= 1
    expected: list[Callable[[str], bool]] = [
        lambda n: n == "process_cpu_seconds_total",
        lambda n: n == "python_info",
        lambda n: n.startswith("python_gc_"),
    ]
    assert all(any(test(n) for n in names) for test in expected)


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "relevanz-dashboard.json"
#: PromQL's own words (functions, aggregations, modifiers) that are no metric names.
PROMQL_WORDS = {"sum", "min", "max", "avg", "count", "by", "without", "rate", "increase",
                "irate", "histogram_quantile", "and", "or", "unless", "offset", "e"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names and functions left out).

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{route="/x"}[5m])) / b_total'))
    ['a_bucket', 'b_total']
    """
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return words - PROMQL_WORDS


async def test_every_grafana_panel_reads_metrics_the_worker_exposes(
    worker: Worker, settings: Settings
) -> None:
    # A dead-letter series exists once there is a dead letter.
    produce_raw(settings, malformed(1, random.Random(1)))
    await eventually(lambda: worker.accounting.dead_letters >= 2, 60, "two dead letters")
    exposed = {name for name, _ in await scraped_after_traffic(worker, settings)}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= exposed, (panel["title"], sorted(names - exposed))
