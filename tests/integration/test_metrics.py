"""``/metrics`` of a real worker on the embedded broker: what Prometheus would scrape."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.codec import pack
from streams.app import Worker
from streams.broker import EmbeddedBroker
from streams.metrics import render
from streams.settings import Settings
from streams.status import Monitor
from tests.harness import eventually, isolated_settings, produce_raw


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path)


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
