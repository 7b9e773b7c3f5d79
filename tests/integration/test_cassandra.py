"""The Cassandra store as Cassandra users judge it, on the session's real node.

What the store contract cannot state for both implementations: that the
configured consistency level is the one sent, and that ``relevanz store
migrate`` upgrades a keyspace made by an older schema.  (Exactly one of two
concurrent approvals winning, counters and an idempotent migrate are in the
contract suite, which runs on Cassandra too.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy

from agents.core.customer import AssignedTag, CustomerPredictions, CustomerState
from streams.errors import StoreUnavailable
from streams.settings import Settings
from streams.store import BatchWrite, Store, open_store
from streams.store.cassandra import ADDED_COLUMNS, CassandraStore
from streams.store.codec import CUSTOMER_TABLES, normalise, rows_of, to_ms
from streams.store.cql import ttl_seconds
from tests.integration.test_store_contract import full_state

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


async def test_a_batch_whose_state_is_refused_leaves_its_events_unseen(
        cassandra_hosts: str, keyspaces: Callable[[], str]) -> None:
    # The ledger is written only once every state and the outbox are stored, however
    # concurrently those go: a tag above Cassandra's 64 KiB key limit is refused.
    store = open_store(_settings(cassandra_hosts, keyspaces()))
    await store.migrate()
    await store.open()
    try:
        refused = CustomerState("c-2", tags={"t" * 70_000: AssignedTag("t", NOW, "e-2")})
        batch = BatchWrite([CustomerState("c-1"), refused], events=[("c-1", "e-1"), ("c-2", "e-2")],
                           outbox={("c-1", "e-1"): b"outputs"})
        with pytest.raises(StoreUnavailable, match="write_batch"):
            await store.write_batch(batch, NOW, 86400.0, 86400.0)
        assert await store.customer_events("c-1", NOW) == []
        assert await store.customer_events("c-2", NOW) == []
        # The refused state alone; the rest of the batch commits whole.
        await store.write_batch(replace(batch, states=[CustomerState("c-1")],
                                        events=[("c-1", "e-1")]), NOW, 86400.0, 86400.0)
        assert await store.customer_events("c-1", NOW) == ["e-1"]
    finally:
        await store.close()


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


# -- the copy of the earlier layout into customer_state --------------------------------

DAY_MS = 86_400_000
#: The cells of customer_state that say how each row was written (write time, TTL).
_WRITTEN = ("SELECT customer_id, part, item, WRITETIME(orders), WRITETIME(granted), "
            "WRITETIME(score), WRITETIME(topic), WRITETIME(expires_at), WRITETIME(channel), "
            "TTL(expires_at) FROM {ks}.customer_state")


def _write_old_layout(session: Any, keyspace: str, state: CustomerState, now_ms: int,
                      stamp: int) -> None:
    """``state`` in the six tables of the earlier layout, as its store wrote it: the rows
    at one timestamp, the history with a TTL."""
    rows = rows_of(state, now_ms, 30 * DAY_MS)
    parts = ([rows.customer], rows.consent, rows.interests, rows.tags, rows.history,
             rows.pending)
    for (table, columns), table_rows in zip(CUSTOMER_TABLES.items(), parts, strict=True):
        for row in table_rows:
            ttl = f"TTL {ttl_seconds(row[-1] - now_ms)} AND " if table == "interactions" else ""
            session.execute(
                f"INSERT INTO {keyspace}.{table} ({', '.join(columns)}) "  # noqa: S608 - constants
                f"VALUES ({', '.join(['%s'] * len(columns))}) USING {ttl}TIMESTAMP {stamp}",
                row, timeout=60)


def _written(hosts: str, keyspace: str) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    with _session(hosts) as session:
        return {(row[0], row[1], row[2]): tuple(row[3:])
                for row in session.execute(_WRITTEN.format(ks=keyspace), timeout=60)}


@pytest.fixture
async def old_keyspace(cassandra_hosts: str, keyspaces: Callable[[], str]
                       ) -> tuple[str, datetime, CustomerState]:
    """A keyspace of the earlier layout holding a full customer, one without anything but
    master data, and consent rows of an id that is no customer (no customers row)."""
    keyspace = keyspaces()
    now = datetime.fromtimestamp(time.time() // 1, UTC)  # TTLs count on the server's clock
    state = full_state("c-1", now - timedelta(days=1))
    with _session(cassandra_hosts) as session:
        _old_keyspace(session, keyspace)
        for table, column, cql_type in ADDED_COLUMNS:  # as the migrate of that time added
            session.execute(f"ALTER TABLE {keyspace}.{table} ADD {column} {cql_type}",
                            timeout=60)
        _write_old_layout(session, keyspace, state, to_ms(now), 1_700_000_000_000_000)
        _write_old_layout(session, keyspace, CustomerState("c-2"), to_ms(now), 7)
        session.execute(f"INSERT INTO {keyspace}.customer_consent (customer_id, purpose, "  # noqa: S608 - constants
                        "granted) VALUES ('c-3', 'email', true)", timeout=60)
    return keyspace, now, state


async def test_migrate_copies_the_earlier_layout_once_with_write_times_and_ttls(
        cassandra_hosts: str, old_keyspace: tuple[str, datetime, CustomerState]) -> None:
    keyspace, now, state = old_keyspace
    store = open_store(_settings(cassandra_hosts, keyspace))
    await store.migrate()
    first = _written(cassandra_hosts, keyspace)
    await store.open()
    try:
        loaded = await store.load_customers(["c-1", "c-2", "c-3"], now)
        assert loaded == {"c-1": normalise(state), "c-2": CustomerState("c-2")}
    finally:
        await store.close()
    # The history keeps its TTL (what was left of it), the other rows have none.
    ttls = [values[-1] for (_, part, _), values in first.items() if part == "interaction"]
    assert len(ttls) == 3
    assert all(ttl is not None and 0 < ttl <= 30 * 86400 for ttl in ttls)
    assert {part for (_, part, _), values in first.items() if values[-1] is not None} == {
        "interaction"}
    # The write times are the earlier layout's, so a second copy writes the same cells.
    assert {(cid, values[0]) for (cid, part, _), values in first.items()
            if part == "profile"} == {("c-1", 1_700_000_000_000_000), ("c-2", 7)}
    await store.migrate()
    again = _written(cassandra_hosts, keyspace)
    assert again.keys() == first.keys()
    for key, values in first.items():
        assert again[key][:-1] == values[:-1], key
        assert values[-1] is None or values[-1] - 5 <= again[key][-1] <= values[-1], key


async def test_after_migrate_saves_and_erasures_win_over_the_old_tables(
        cassandra_hosts: str, old_keyspace: tuple[str, datetime, CustomerState]) -> None:
    keyspace, now, _ = old_keyspace
    store = open_store(_settings(cassandra_hosts, keyspace))
    await store.migrate()
    await store.open()
    try:
        changed = full_state("c-1", now - timedelta(days=1))
        changed.tags = {}
        await store.write_batch(BatchWrite([changed]), now, 86400.0, 30 * 86400.0)
        await store.delete_customer("c-2")
        await store.migrate()  # copies the old tables again: older than both
        loaded = await store.load_customers(["c-1", "c-2"], now)
        assert loaded == {"c-1": normalise(changed)}
        # The erasure reached the old tables too, so no later copy brings c-2 back.
        with _session(cassandra_hosts) as session:
            for table in ("customer_state", *CUSTOMER_TABLES):
                assert not list(session.execute(
                    f"SELECT * FROM {keyspace}.{table} WHERE customer_id = 'c-2'",  # noqa: S608 - constants
                    timeout=60)), table
    finally:
        await store.close()
    assert isinstance(store, CassandraStore)
    await store.migrate(drop_old_tables=True)
    with _session(cassandra_hosts) as session:
        assert not {row[0] for row in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (keyspace,), timeout=60)} & set(CUSTOMER_TABLES)
    await store.open()
    try:
        assert await store.load_customers(["c-1", "c-2"], now) == {"c-1": normalise(changed)}
    finally:
        await store.close()
