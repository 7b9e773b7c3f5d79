"""What an operator reads about a worker on Apache Kafka and Apache Cassandra.

``relevanz status`` and the dashboard read ``/v1/status``, ``/v1/history``,
``/v1/trends``, ``/v1/campaigns``, ``/v1/controls`` and a customer's view;
here they describe a worker on the production pair with the figures it
really has: end offsets as Kafka reports them, lag 0 once committed, the
applied and dead-lettered counts, and a Cassandra store that answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from confluent_kafka import Producer

from schemas.codec import pack
from schemas.topics import INPUT_TOPICS
from streams.api.web import bound_port, build_api, serve
from streams.app import build_worker
from streams.servers.kafka import KafkaServer
from streams.settings import Settings
from streams.store import open_store
from tests.harness import eventually, eventually_async, isolated_settings
from tests.integration.conftest import stop_or_explain

pytestmark = pytest.mark.cassandra

VIEWER = "viewer-token-0123456789ab"
RELEVANZ = str(Path(sys.executable).parent / "relevanz")


def produce(settings: Settings, messages: list[tuple[str, bytes, bytes]]
            ) -> dict[tuple[str, int], int]:
    """Publish ``messages``; how many landed on each (logical topic, partition)."""
    landed: dict[tuple[str, int], int] = {}

    def delivered(error: object, message: Any) -> None:
        assert error is None, error
        key = (message.topic().removeprefix(settings.topic_prefix), message.partition())
        landed[key] = landed.get(key, 0) + 1

    producer = Producer({"bootstrap.servers": settings.broker_servers, "acks": "all"})
    for topic, key, value in messages:
        producer.produce(settings.topic(topic), key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    return landed


def click(event_id: str, customer: str) -> tuple[str, bytes, bytes]:
    return ("clicks", customer.encode(), pack({
        "event_id": event_id, "customer_id": customer, "schema_version": 1,
        "occurred_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "content_id": "n1"}))


async def test_status_and_the_dashboards_data_tell_the_real_figures(
        kafka_server: KafkaServer, cassandra_hosts: str, tmp_path: Path) -> None:
    keyspace = f"status_{uuid.uuid4().hex[:8]}"
    settings = isolated_settings(kafka_server.bootstrap_servers, tmp_path,
                                 store_url=f"cassandra://{cassandra_hosts}/{keyspace}",
                                 viewer_tokens=(VIEWER,), campaign_stats_interval_s=86400.0)
    await open_store(settings).migrate()
    worker = build_worker(settings)
    await worker.start()
    runner = await serve(build_api(worker), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {VIEWER}"}) as session:

            async def get(path: str) -> Any:
                async with session.get(base + path) as response:
                    assert response.status == 200, (path, response.status)
                    return await response.json()

            messages = [click(f"e{i}", f"c{i % 23}") for i in range(240)]
            messages += [("clicks", b"c1", b"\xc1 not msgpack")] * 10
            landed = produce(settings, messages)
            await eventually(lambda: worker.accounting.events_in >= 250, 90, "250 events")

            async def settled() -> bool:
                status = await get("/v1/status")
                rows = {(p["topic"], p["partition"]): p for p in status["partitions"]}
                return status["ready"] and all(
                    rows[tp]["committed_offset"] == n for tp, n in landed.items())

            await eventually_async(settled, 60, "offsets committed and ready", poll_s=0.3)
            status = await get("/v1/status")
            rows = {(p["topic"], p["partition"]): p for p in status["partitions"]}
            assert len(rows) == settings.partitions * len(INPUT_TOPICS)
            for tp, row in rows.items():
                # Kafka's end offsets are exact: what landed on each partition.
                assert (row["end_offset"], row["lag"]) == (landed.get(tp, 0), 0), (tp, row)
            assert status["lag_total"] == 0
            counts = status["counts"]
            assert (counts["events_in"], counts["applied"], counts["duplicates"],
                    counts["dead_letters"]) == (250, 240, 0, 10)
            assert status["checks"]["store"] == "reachable"
            assert status["checks"]["broker"] == "reachable"
            store = status["store"]
            assert (store["kind"], store["reachable"]) == ("cassandra", True)
            assert store["latency_ms"] > 0
            assert status["throughput"]["ingest"]["1m"]["events"] == 250

            # The dashboard's other panels answer from the same worker and store.
            customer = await get("/v1/customers/c1")
            held = {f"e{i}" for i in range(240) if i % 23 == 1}
            assert set(customer["ledger_event_ids"]) == held  # Cassandra's event ledger
            assert len(customer["history"]) == len(held)
            for path in ("/v1/trends", "/v1/campaigns", "/v1/controls", "/v1/proposals"):
                await get(path)

            async def charted() -> bool:
                return bool((await get("/v1/history"))["points"])

            await eventually_async(charted, 30, "a history point (one every 5 s)", poll_s=0.5)
            assert (await get("/v1/history"))["points"][-1]["dead_letters"] == 10

        # `relevanz status` as an operator runs it, against the same worker (in a
        # thread: the worker's API answers on this event loop).
        env = {**os.environ, "RELEVANZ_API_TOKEN": VIEWER}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([RELEVANZ, "status", "--url", base, *args], env=env,
                                  capture_output=True, text=True, timeout=60, check=False)

        done = await asyncio.to_thread(run, "--json")
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert (body["counts"]["applied"], body["lag_total"]) == (240, 0)
        table = await asyncio.to_thread(run)
        assert table.returncode == 0, table.stderr
        assert "READY" in table.stdout
        assert "250 consumed · 240 applied · 0 duplicates · 10 dead letters" in table.stdout
        assert "Store: cassandra, " in table.stdout
    finally:
        await stop_or_explain(runner.cleanup(), "the API to stop")
        await stop_or_explain(worker.stop(), "the worker to stop")
