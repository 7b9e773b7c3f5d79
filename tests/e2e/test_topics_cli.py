"""``relevanz topics create`` as docker-compose.yml runs it: a real process, a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined] # not in the stubs

from schemas.topics import TOPICS
from streams.broker import EmbeddedBroker

RELEVANZ = str(Path(sys.executable).parent / "relevanz")


def create(broker: EmbeddedBroker, partitions: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RELEVANZ_BROKER_URL": f"kafka://{broker.bootstrap_servers}",
           "RELEVANZ_TOPIC_PREFIX": "topics-cli.", "RELEVANZ_PARTITIONS": str(partitions)}
    return subprocess.run([RELEVANZ, "topics", "create"], capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def test_creates_every_topic_once_and_refuses_a_different_partition_count(
    broker: EmbeddedBroker,
) -> None:
    for _ in range(2):  # safe to repeat
        done = create(broker, 6)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"topics on {broker.bootstrap_servers}: all {len(TOPICS)} present, "
            "customer-keyed ones with 6 partitions")
    existing = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(
        timeout=10).topics
    for contract in TOPICS.values():
        name = f"topics-cli.{contract.name}"
        assert name in existing
        if contract.customer_keyed:
            assert len(existing[name].partitions) == 6, name

    done = create(broker, 3)
    assert done.returncode == 2
    assert done.stderr.startswith("relevanz: error: RELEVANZ_PARTITIONS: topic topics-cli.")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
