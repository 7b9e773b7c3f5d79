"""A worker on the production pair, Apache Kafka and Apache Cassandra, through an outage.

Cassandra is stopped while events flow and started again on the same data:
the worker holds its batch, retries, and catches up, and every event is
applied exactly once (the ledger in Cassandra lists each one).  The node is
one of the test's own, so the session's node stays up for the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from streams.app import build_worker
from streams.servers.cassandra import CassandraServer
from streams.servers.kafka import KafkaServer
from streams.store import open_store
from tests import events
from tests.faults import committed
from tests.harness import eventually, eventually_async, isolated_settings, produce_raw

pytestmark = pytest.mark.cassandra


@pytest.fixture
def cassandra(tmp_path: Path) -> Iterator[CassandraServer]:
    with CassandraServer(tmp_path / "cassandra") as running:
        yield running


def clicks(prefix: str, n: int) -> list[tuple[str, bytes | None, bytes]]:
    at = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    return [events.click(f"{prefix}-{i}", f"c-{i % 53}", at=at) for i in range(n)]


async def test_cassandra_stopped_and_started_mid_stream_loses_nothing(
        kafka_server: KafkaServer, cassandra: CassandraServer, tmp_path: Path) -> None:
    settings = isolated_settings(kafka_server.bootstrap_servers, tmp_path,
                                 store_url=cassandra.store_url("relevanz_outage"),
                                 store_timeout_s=2.0)
    await open_store(settings).migrate()
    worker = build_worker(settings)
    await worker.start()
    try:
        produce_raw(settings, clicks("before", 300))
        await eventually(lambda: worker.accounting.applied == 300, 60, "the first 300")
        cassandra.stop()
        with capture_logs() as logs:
            produce_raw(settings, clicks("during", 700))
            await eventually(
                lambda: any(e["event"] == "store_unavailable_retrying" for e in logs), 60,
                "the worker to retry")
            assert worker.accounting.events_in < 1000
            cassandra.start()
            await eventually(lambda: worker.accounting.events_in == 1000, 120,
                             "the worker to catch up")
        counts = worker.accounting
        assert (counts.applied, counts.duplicates, counts.dead_letters) == (1000, 0, 0)

        async def all_committed() -> bool:
            return committed(settings) == 1000

        await eventually_async(all_committed, 30, "every offset committed", poll_s=0.3)
    finally:
        await worker.stop()
    store = open_store(settings)
    await store.open()
    try:  # each event in the ledger once, under its customer
        events = [eid for c in range(53)
                  for eid in await store.customer_events(f"c-{c}", datetime.now(UTC))]
        assert sorted(events) == sorted(
            [f"before-{i}" for i in range(300)] + [f"during-{i}" for i in range(700)])
    finally:
        await store.close()
