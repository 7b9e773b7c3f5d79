"""The Cassandra store as Cassandra users judge it, on the session's real node.

What the store contract cannot state for both implementations: that the
configured consistency level is the one sent, and that ``relevanz store
migrate`` upgrades a keyspace made by an older schema.  (Exactly one of two
concurrent approvals winning, counters and an idempotent migrate are in the
contract suite, which runs on Cassandra too.)
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy

from agents.core.customer import CustomerPredictions, CustomerState
from streams.errors import StoreUnavailable
from streams.settings import Settings
from streams.store import BatchWrite, Store, open_store

pytestmark = pytest.mark.cassandra

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _settings(hosts: str, keyspace: str, **changes: object) -> Settings:
    return Settings(store_url=f"cassandra://{hosts}/{keyspace}").with_(**changes)


@contextmanager
def _session(hosts: str) -> Iterator[Any]:
    """A plain driver session on the first of ``hosts`` (for DDL the store would not run)."""
    host, _, port = hosts.partition(",")[0].partition(":")
    cluster = Cluster([host], port=int(port or 9042), protocol_version=5, execution_profiles={
        EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())})
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


@pytest.fixture
async def keyspaces(cassandra_hosts: str) -> AsyncIterator[Callable[[], str]]:
    """Makes new keyspace names; drops the keyspaces at the end of the test."""
    made: list[str] = []

    def new() -> str:
        made.append(f"relevanz_test_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield new
    with _session(cassandra_hosts) as session:
        for keyspace in made:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


async def _round_trip(store: Store, customer_id: str) -> CustomerState | None:
    await store.write_batch(BatchWrite([CustomerState(customer_id)]), NOW, 86400.0, 86400.0)
    return (await store.load_customers([customer_id], NOW)).get(customer_id)


async def test_the_configured_consistency_level_is_the_one_sent(
        cassandra_hosts: str, keyspaces: Callable[[], str]) -> None:
    # Three replicas asked for on a one-node cluster: only consistency ONE can be met.
    keyspace = keyspaces()
    one = open_store(_settings(cassandra_hosts, keyspace, cassandra_consistency="one",
                               cassandra_replication="SimpleStrategy:3"))
    await one.migrate()
    await one.open()
    try:
        assert await _round_trip(one, "c-1") == CustomerState("c-1")
    finally:
        await one.close()
    quorum = open_store(_settings(cassandra_hosts, keyspace,
                                  cassandra_consistency="local_quorum"))
    await quorum.open()
    try:
        with pytest.raises(StoreUnavailable,
                           match=r"only 1 of 2 replicas needed for consistency local_quorum"):
            await _round_trip(quorum, "c-2")
    finally:
        await quorum.close()


def _gc_grace(hosts: str, keyspace: str, table: str) -> int:
    with _session(hosts) as session:
        row = session.execute("SELECT gc_grace_seconds FROM system_schema.tables "
                              "WHERE keyspace_name = %s AND table_name = %s",
                              (keyspace, table), timeout=60).one()
    return int(row[0])


async def test_the_outbox_tombstones_are_purgeable_after_3_hours_not_10_days(
        cassandra_hosts: str, keyspaces: Callable[[], str]) -> None:
    keyspace = keyspaces()
    store = open_store(_settings(cassandra_hosts, keyspace))
    await store.migrate()
    assert _gc_grace(cassandra_hosts, keyspace, "outbox") == 10800
    assert _gc_grace(cassandra_hosts, keyspace, "customer_state") == 864000  # the default
    # A keyspace of the older schema (the default 10 days) is changed by migrate.
    with _session(cassandra_hosts) as session:
        session.execute(f"ALTER TABLE {keyspace}.outbox WITH gc_grace_seconds = 864000",
                        timeout=60)
    await store.migrate()
    assert _gc_grace(cassandra_hosts, keyspace, "outbox") == 10800


#: The customer tables of the layout before ``customer_state``, as the first release
#: made them (without customers.predictions, customers.parked, customer_consent.earlier).
OLD_LAYOUT = (
    "CREATE TABLE {ks}.customers (customer_id text PRIMARY KEY, locale text, language text, "
    "time_zone text, master_updated_at timestamp, country text, birth_year int, gender text, "
    "attributes frozen<map<text, text>>, orders bigint, revenue double, "
    "first_purchase_at timestamp, last_purchase_at timestamp, last_event_at timestamp)",
    "CREATE TABLE {ks}.customer_consent (customer_id text, purpose text, granted boolean, "
    "decided_at timestamp, source text, legal_basis text, PRIMARY KEY ((customer_id), purpose))",
    "CREATE TABLE {ks}.customer_interests (customer_id text, topic text, score double, "
    "scored_at timestamp, recent frozen<list<timestamp>>, PRIMARY KEY ((customer_id), topic))",
    "CREATE TABLE {ks}.customer_tags (customer_id text, tag text, topic text, "
    "assigned_at timestamp, caused_by text, PRIMARY KEY ((customer_id), tag))",
    "CREATE TABLE {ks}.interactions (customer_id text, occurred_at timestamp, event_id text, "
    "kind text, content_id text, campaign_id text, amount double, expires_at timestamp, "
    "PRIMARY KEY ((customer_id), occurred_at, event_id))",
    "CREATE TABLE {ks}.customer_pending_sends (customer_id text, trigger_id text, "
    "idempotency_key text, channel text, send_at timestamp, campaign_id text, "
    "content_id text, PRIMARY KEY ((customer_id), trigger_id))",
)


def _old_keyspace(session: Any, keyspace: str) -> None:
    session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}", timeout=60)
    for statement in OLD_LAYOUT:
        session.execute(statement.format(ks=keyspace), timeout=60)


def _columns(hosts: str, keyspace: str, table: str) -> set[str]:
    with _session(hosts) as session:
        return {row[0] for row in session.execute(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
            "AND table_name = %s", (keyspace, table), timeout=60)}


async def test_migrate_upgrades_a_keyspace_of_the_older_schema(
        cassandra_hosts: str, keyspaces: Callable[[], str]) -> None:
    keyspace = keyspaces()
    with _session(cassandra_hosts) as session:
        _old_keyspace(session, keyspace)
    store = open_store(_settings(cassandra_hosts, keyspace))
    with pytest.raises(StoreUnavailable, match=r"lacks .*customer_state.*migrate"):
        await store.open()
    await store.migrate()
    await store.migrate()
    assert _gc_grace(cassandra_hosts, keyspace, "outbox") == 10800
    # The tables of the earlier layout get the columns added since, so they can be copied.
    assert {"predictions", "parked"} <= _columns(cassandra_hosts, keyspace, "customers")
    assert "earlier" in _columns(cassandra_hosts, keyspace, "customer_consent")
    await store.open()
    try:
        state = CustomerState("c-1", predictions=CustomerPredictions(
            0.125, 0.75, 19, NOW, {19: 2.5}, NOW))
        await store.write_batch(BatchWrite([state]), NOW, 86400.0, 86400.0)
        assert (await store.load_customers(["c-1"], NOW))["c-1"] == state
    finally:
        await store.close()
