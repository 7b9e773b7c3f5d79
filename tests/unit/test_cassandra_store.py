"""What can be checked of the Cassandra store without a Cassandra server.

- Every prepared statement names only tables and columns that
  ``schemas/cassandra.cql`` creates, and no reserved word; the embedded store
  mirrors those tables and columns.
- A state goes through the driver's own serialisers into the bound values of
  its batch, and those values, decoded by the driver's deserialisers as a
  server would return them, map back to the state.  Only the server's storage
  is stood in for: the types of the bind markers are derived from the schema
  file as the server would derive them.
- Connecting to a port where nothing listens fails with one readable
  :class:`StoreUnavailable` naming the host.

The behaviour against a real cluster is the contract suite
(``tests/integration/test_store_contract.py`` with ``RELEVANZ_CASSANDRA_HOSTS``).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cassandra import OperationTimedOut
from cassandra.cqltypes import (
    BooleanType,
    BytesType,
    DateType,
    DoubleType,
    Int32Type,
    ListType,
    LongType,
    MapType,
    UTF8Type,
)
from cassandra.metadata import cql_keywords_reserved
from cassandra.protocol import ColumnMetadata
from cassandra.query import UNSET_VALUE, PreparedStatement
from hypothesis import given, settings

from agents.core.customer import CustomerState, Interaction
from streams.broker import free_port
from streams.errors import ConfigError, StoreUnavailable
from streams.settings import Settings
from streams.store import embedded
from streams.store.cassandra import CassandraStore, _Pages
from streams.store.codec import CUSTOMER_TABLES, normalise, rows_of, state_of, to_ms
from streams.store.cql import (
    PARTS,
    STATE_COLUMNS,
    STATE_READ_COLUMNS,
    STATE_TABLE,
    STATEMENTS,
    TIME_COLUMNS,
    customer_batch,
    customer_rows,
    erasure_batch,
    ledger_batch,
    parse_store_url,
    schema_statements,
    schema_tables,
    ttl_seconds,
)
from tests.customer_strategies import customer_states

SCHEMA = schema_tables()
PROTOCOL = 4
NOW = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_MS = 365 * 86_400_000


def _statement_parts(cql: str) -> tuple[str, list[str]]:
    """The table a statement uses and every column it names."""
    if cql.startswith("INSERT"):
        found = re.fullmatch(
            r"INSERT INTO (\w+) \(([^)]*)\) VALUES \([?, ]*\)(?: USING .*| IF NOT EXISTS)?", cql)
        assert found, cql
        return found.group(1), [c.strip() for c in found.group(2).split(",")]
    if cql.startswith("DELETE"):
        found = re.fullmatch(r"DELETE FROM (\w+) USING TIMESTAMP \? WHERE (.*)", cql)
        assert found, cql
        return found.group(1), re.findall(r"(\w+) = \?", found.group(2))
    if cql.startswith("UPDATE"):
        found = re.fullmatch(r"UPDATE (\w+) SET (.*) WHERE (.*?)(?: IF (.*))?", cql)
        assert found, cql
        named = re.findall(r"(\w+) = ", f"{found.group(2)}, {found.group(3)}, {found.group(4)}")
        return found.group(1), named
    if cql.startswith("TRUNCATE"):
        found = re.fullmatch(r"TRUNCATE (\w+)", cql)
        assert found, cql
        return found.group(1), []
    found = re.fullmatch(r"SELECT (?:DISTINCT )?(.*) FROM (\w+)(?: WHERE (.*?))?(?: LIMIT \d+)?",
                         cql)
    assert found, cql
    where = re.findall(r"(\w+) (?:=|IN) \?", found.group(3) or "")
    return found.group(2), [c.strip() for c in found.group(1).split(",")] + where


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_every_statement_uses_only_what_the_schema_file_creates(name: str) -> None:
    table, columns = _statement_parts(STATEMENTS[name])
    assert table in SCHEMA, f"{name}: table {table} is not created by schemas/cassandra.cql"
    unknown = [c for c in columns if c not in SCHEMA[table]]
    assert not unknown, f"{name}: {table} has no columns {unknown} in schemas/cassandra.cql"


def test_no_table_or_column_is_a_reserved_word() -> None:
    names = set(SCHEMA) | {c for columns in SCHEMA.values() for c in columns}
    assert not {n for n in names if n.lower() in cql_keywords_reserved}


def test_the_codec_maps_every_column_of_every_customer_table() -> None:
    assert tuple(SCHEMA[STATE_TABLE]) == STATE_COLUMNS
    assert set(PARTS) == set(CUSTOMER_TABLES)
    for columns in CUSTOMER_TABLES.values():
        assert set(columns) <= set(SCHEMA[STATE_TABLE])
    # A column shared by two parts has one type.
    assert SCHEMA[STATE_TABLE]["topic"] == SCHEMA[STATE_TABLE]["content_id"] == "text"
    timestamps = {c for cols in SCHEMA.values() for c, kind in cols.items() if kind == "timestamp"}
    assert timestamps == TIME_COLUMNS
    assert SCHEMA[STATE_TABLE]["recent"] == "frozen<list<timestamp>>"


def test_the_embedded_store_mirrors_the_cassandra_tables() -> None:
    db = sqlite3.connect(":memory:")
    for statement in embedded._TABLES:
        db.execute(statement)
    tables = {**{t: list(c) for t, c in SCHEMA.items() if t != STATE_TABLE}, **CUSTOMER_TABLES}
    for table, columns in tables.items():
        mirrored = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        assert mirrored == list(columns), f"{table}: embedded {mirrored}, cassandra {columns}"


def test_the_schema_renders_keyspace_and_replication() -> None:
    statements = schema_statements("relevanz_prod", "NetworkTopologyStrategy:dc1=3,dc2=2")
    assert statements[0] == (
        "CREATE KEYSPACE IF NOT EXISTS relevanz_prod WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2} AND durable_writes = true")
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS relevanz_prod.") for s in statements[1:])
    assert len(statements) == 1 + len(SCHEMA)
    assert not any("$" in s or "--" in s for s in statements)
    # Mixed case must be quoted, or Cassandra would fold it to lower case.
    assert schema_statements("Relevanz", "SimpleStrategy:1")[1].startswith(
        'CREATE TABLE IF NOT EXISTS "Relevanz".')


def test_store_urls_are_parsed_or_refused_with_the_setting_named() -> None:
    assert parse_store_url("cassandra://10.0.0.1/relevanz") == ([("10.0.0.1", 9042)], "relevanz")
    assert parse_store_url("cassandra://a:9043,b:9044/ks") == ([("a", 9043), ("b", 9044)], "ks")
    for bad in ("cassandra://a:x/ks", "cassandra://,a/ks", "cassandra://a/"):
        with pytest.raises(ConfigError, match="RELEVANZ_STORE_URL"):
            parse_store_url(bad)


# -- the driver's serialisation, with the server's storage stood in for -------------

_SIMPLE = {"text": UTF8Type, "timestamp": DateType, "int": Int32Type, "bigint": LongType,
           "double": DoubleType, "boolean": BooleanType, "blob": BytesType}


def _driver_type(cql: str) -> Any:
    cql = cql.strip()
    if cql.startswith("frozen<"):
        return _driver_type(cql[len("frozen<"):-1])
    if cql.startswith("list<"):
        return ListType.apply_parameters([_driver_type(cql[len("list<"):-1])])
    if cql.startswith("map<"):
        key, value = cql[len("map<"):-1].split(",", 1)
        return MapType.apply_parameters([_driver_type(key), _driver_type(value)])
    return _SIMPLE[cql]


def _prepared(name: str, cql: str) -> PreparedStatement:
    """A PreparedStatement with the bind markers a server would report for ``cql``."""
    table, columns = _statement_parts(cql)
    types = SCHEMA[table]
    if cql.startswith("INSERT"):
        markers = [(c, _driver_type(types[c])) for c in columns]
        if "USING TTL" in cql:
            markers.append(("[ttl]", Int32Type))
        if "TIMESTAMP ?" in cql:
            markers.append(("[timestamp]", LongType))
    elif cql.startswith("DELETE"):
        markers = [("[timestamp]", LongType), (columns[0], _driver_type(types[columns[0]]))]
    elif cql.startswith("TRUNCATE"):
        markers = []
    else:
        where = re.findall(r"(\w+) (=|IN) \?", cql)
        markers = [(c, _driver_type(types[c]) if op == "=" else
                    ListType.apply_parameters([_driver_type(types[c])])) for c, op in where]
    metadata = [ColumnMetadata("ks", table, column, kind) for column, kind in markers]
    routing = [i for i, (column, _) in enumerate(markers)
               if column in ("customer_id", "partition_key", "model_id")][:1]
    return PreparedStatement(metadata, name.encode(), routing or None, cql, "ks", PROTOCOL,
                             None, None)


PREPARED = {name: _prepared(name, cql) for name, cql in STATEMENTS.items()}
_BY_ID = {p.query_id: (name, p) for name, p in PREPARED.items()}


def _decoded(batch: Any) -> list[tuple[str, list[Any]]]:
    """The batch's statements with their values decoded as the server would read them."""
    decoded = []
    # The driver keeps a batch's bound values here; it has no public accessor.
    for _, query_id, values in batch._statements_and_parameters:
        name, prepared = _BY_ID[query_id]
        decoded.append((name, [
            None if value is UNSET_VALUE or value is None
            else column.type.from_binary(value, PROTOCOL)
            for column, value in zip(prepared.column_metadata, values, strict=True)]))
    return decoded


def _stored(batch: Any) -> list[tuple[Any, ...]]:
    """Rows the batch leaves in ``customer_state``, shaped like the ``SELECT`` of a customer
    (in the table's order)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name, values in _decoded(batch):
        if name.startswith("insert_"):
            columns = [c.name for c in PREPARED[name].column_metadata]
            row = dict(zip(columns, values, strict=True))
            rows[(row["part"], row["item"])] = row  # a later write of a key replaces it
    return [tuple(row.get(c) for c in STATE_READ_COLUMNS) for _, row in sorted(rows.items())]


@settings(max_examples=60, deadline=None)
@given(state=customer_states())
def test_a_state_survives_the_drivers_serialisation(state: CustomerState) -> None:
    rows = rows_of(state, to_ms(NOW), 100 * YEAR_MS)
    stored = _stored(customer_batch(PREPARED, rows, to_ms(NOW), stamp=1_000_000))
    codec = customer_rows(state.customer_id, stored)
    history = sorted(codec["interactions"], key=lambda row: (row[1], row[2]))
    loaded = state_of(codec["customers"][0], codec["customer_consent"],
                      codec["customer_interests"], codec["customer_tags"], history,
                      codec["customer_pending_sends"])
    assert loaded == normalise(state)


@given(state=customer_states())
@settings(max_examples=20, deadline=None)
def test_a_customer_batch_deletes_at_t_minus_1_and_writes_at_t(state: CustomerState) -> None:
    stamp = 1_760_000_000_000_000
    rows = rows_of(state, to_ms(NOW), 100 * YEAR_MS)
    decoded = _decoded(customer_batch(PREPARED, rows, to_ms(NOW), stamp))
    deletes = [values for name, values in decoded if name.startswith("delete_")]
    inserts = [(name, values) for name, values in decoded if name.startswith("insert_")]
    assert [n for n, _ in decoded if n.startswith("delete_")] == ["delete_customer_state"]
    assert all(values == [stamp - 1, state.customer_id] for values in deletes)
    assert all(values[-1] == stamp for _, values in inserts)
    for name, values in inserts:
        if name == "insert_interaction":
            expires, ttl = values[-3], values[-2]
            assert ttl == ttl_seconds(to_ms(expires.replace(tzinfo=UTC)) - to_ms(NOW))


def test_ledger_and_erasure_batches_bind_their_values() -> None:
    ledger = _decoded(ledger_batch(PREPARED, "c-1", ["e-1", "e-2"], to_ms(NOW), 60, 7))
    assert [v[:2] for _, v in ledger] == [["c-1", "e-1"], ["c-1", "e-2"]]
    assert all(v[3:] == [60, 7] for _, v in ledger)
    erasure = _decoded(erasure_batch(PREPARED, "c-1", 9))
    assert sorted(n for n, _ in erasure) == [
        "delete_customer_decisions", "delete_customer_state", "delete_event_ledger"]
    assert all(v == [9, "c-1"] for _, v in erasure)


def test_ttls_never_end_before_the_logical_expiry() -> None:
    assert ttl_seconds(1) == 1
    assert ttl_seconds(1000) == 1
    assert ttl_seconds(1001) == 2
    # Beyond what the server accepts (a 20-year TTL, an expiry after 2038): no TTL.
    assert ttl_seconds(10**15) == 0
    assert ttl_seconds(400_000_000_000, wall_s=1_700_000_000) == 400_000_000
    assert ttl_seconds(400_000_000_000, wall_s=1_800_000_000) == 0


def test_history_ttl_counts_from_the_event_time() -> None:
    state = CustomerState("c-1")
    rows = rows_of(state, to_ms(NOW), 0)
    assert rows.history == []
    state.history = [Interaction(NOW - timedelta(days=10), "old", "click"),
                     Interaction(NOW - timedelta(days=1), "new", "click")]
    state.last_event_at = NOW  # live traffic: the age counts from the latest event
    rows = rows_of(state, to_ms(NOW), 5 * 86_400_000)
    assert [r[2] for r in rows.history] == ["new"]
    assert rows.history[0][-1] == to_ms(NOW + timedelta(days=4))


# -- the bridge from the driver's I/O thread to the event loop -----------------------


class _ResponseFromAnotherThread:
    """Stands in for the driver's ResponseFuture: each page arrives on a thread of its own."""

    def __init__(self, pages: list[list[int]], error: Exception | None = None) -> None:
        self._pages, self._error, self._next = pages, error, 0
        self._callback: Any = None
        self._errback: Any = None
        self.threads: set[int] = set()

    def add_callbacks(self, callback: Any, errback: Any) -> None:
        self._callback, self._errback = callback, errback
        self._deliver()

    def _deliver(self) -> None:
        def run() -> None:
            self.threads.add(threading.get_ident())
            if self._error is not None and self._next == len(self._pages) - 1:
                self._errback(self._error)
                return
            page = self._pages[self._next]
            self._next += 1  # the driver sets its paging state before calling back
            self._callback(page)

        threading.Thread(target=run).start()

    @property
    def has_more_pages(self) -> bool:
        return self._next < len(self._pages)

    def start_fetching_next_page(self) -> None:
        self._deliver()


async def test_pages_reach_the_event_loop_in_order() -> None:
    response = _ResponseFromAnotherThread([[1, 2], [3], [], [4]])
    assert [page async for page in _Pages(response)] == [[1, 2], [3], [], [4]]
    assert threading.get_ident() not in response.threads


async def test_an_error_on_a_later_page_is_raised_in_the_loop() -> None:
    response = _ResponseFromAnotherThread([[1], [2]], error=OperationTimedOut(last_host="h1"))
    pages: list[list[int]] = []

    async def read_all() -> None:
        async for page in _Pages(response):
            pages.append(page)

    with pytest.raises(OperationTimedOut):
        await read_all()
    assert pages == [[1]]


# -- no server --------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["open", "migrate"])
async def test_an_unreachable_cluster_is_one_readable_error(operation: str) -> None:
    port = free_port()  # nothing listens there
    settings_ = Settings(store_url=f"cassandra://127.0.0.1:{port}/relevanz",
                         store_timeout_s=2.0)
    store = CassandraStore(settings_)
    with pytest.raises(StoreUnavailable) as raised:
        await getattr(store, operation)()
    message = str(raised.value)
    assert message.startswith(f"cassandra 127.0.0.1:{port}/relevanz: {operation} failed: ")
    assert f"127.0.0.1:{port}" in message.split("failed: ", 1)[1]
    assert "\n" not in message
    await store.close()


async def test_requests_on_an_unopened_store_say_so() -> None:
    store = CassandraStore(Settings(store_url="cassandra://127.0.0.1/relevanz"))
    with pytest.raises(StoreUnavailable, match="is not open"):
        await store.load_customers(["c-1"], NOW)


def test_the_profile_carries_the_settings() -> None:
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    store = CassandraStore(Settings(store_url="cassandra://127.0.0.1,127.0.0.2:9142/ks",
                                    cassandra_consistency="each_quorum",
                                    cassandra_local_dc="eu-west", store_timeout_s=3.5))
    cluster = store.new_cluster()
    profile = cluster.profile_manager.profiles[EXEC_PROFILE_DEFAULT]
    assert profile.consistency_level == ConsistencyLevel.EACH_QUORUM
    assert profile.request_timeout == 3.5
    assert isinstance(profile.load_balancing_policy, TokenAwarePolicy)
    child = profile.load_balancing_policy._child_policy
    assert isinstance(child, DCAwareRoundRobinPolicy)
    assert child.local_dc == "eu-west"
    assert cluster.contact_points == [("127.0.0.1", 9142), ("127.0.0.2", 9142)]
    cluster.shutdown()
