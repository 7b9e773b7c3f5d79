"""Fixtures shared by every test layer: the brokers and the Cassandra node.

Three real servers serve the tests:

- the embedded Tansu broker (``broker``, one per module): the default of
  every test that needs a broker;
- Apache Kafka (``kafka_server``, one KRaft node per session): a module that
  declares ``pytestmark = pytest.mark.brokers("tansu", "kafka")`` runs each of
  its broker tests once per named broker (``broker`` is then Kafka for the
  second run); tests isolate themselves by topic prefix and consumer group;
- Apache Cassandra (``cassandra_server``, one node per session) for the store
  contract and every test that names the fixture; tests isolate themselves by
  keyspace.

Kafka and Cassandra start on first use from the project's own poms
(``streams/servers/``); without Java 17 or Maven those tests fail with a line
that says what to install.  ``RELEVANZ_CASSANDRA_HOSTS`` points the Cassandra
tests at a running cluster instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from streams.broker import EmbeddedBroker
from streams.servers.cassandra import CassandraServer
from streams.servers.kafka import KafkaServer
from tests.harness import EMBEDDED_BROKERS

# Machines running the suite are shared and noisy: a single slow example is
# not a failure, so property tests have no per-example deadline.
settings.register_profile("relevanz", deadline=None)
settings.load_profile("relevanz")

#: The brokers a module can name in ``pytest.mark.brokers``.
BROKERS = ("tansu", "kafka")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a ``brokers``-marked module's broker tests once per broker it names."""
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is None or "broker" not in metafunc.fixturenames:
        return
    unknown = set(marker.args) - set(BROKERS)
    assert not unknown, f"pytest.mark.brokers: unknown broker(s) {sorted(unknown)}"
    metafunc.parametrize("broker", marker.args, indirect=True, scope="module")


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """One Apache Kafka KRaft node for the whole session."""
    with KafkaServer(Path(tmp_path_factory.mktemp("kafka"))) as running:
        yield running


@pytest.fixture(scope="session")
def cassandra_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of Cassandra: ``RELEVANZ_CASSANDRA_HOSTS``, else one node for the session."""
    hosts = os.environ.get("RELEVANZ_CASSANDRA_HOSTS", "").strip()
    if hosts:
        yield hosts
        return
    with CassandraServer(Path(tmp_path_factory.mktemp("cassandra"))) as running:
        yield running.hosts


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[EmbeddedBroker | KafkaServer]:
    """A broker spoken to over the Kafka protocol: Tansu, or Kafka where a module asks.

    Tansu per module rather than per session: it keeps everything in memory,
    and in one long session it was seen to time out fetches and to answer a
    fetch with another topic's messages. It starts in well under a second.
    Its address is in ``EMBEDDED_BROKERS`` while it runs, so that the tests'
    settings give its consumer groups the short session timeout
    (tests/harness.py, ``group_timeouts``).
    """
    if getattr(request, "param", "tansu") == "kafka":
        yield request.getfixturevalue("kafka_server")
        return
    log_dir = Path(tmp_path_factory.mktemp("broker"))
    with EmbeddedBroker(log_dir / "broker.log") as running:
        EMBEDDED_BROKERS.add(running.bootstrap_servers)
        try:
            yield running
        finally:
            EMBEDDED_BROKERS.discard(running.bootstrap_servers)
