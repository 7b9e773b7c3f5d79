"""CQL of the Cassandra store, with no connection: schema file, statements, batches.

Everything here is plain data and pure functions, so it is checked without a
server (``tests/unit/test_cassandra_cql.py``): that every statement names
only tables and columns the schema file creates, and that states survive the
driver's own serialisation into bound statements and back.

>>> STATEMENTS["delete_customer_state"]
'DELETE FROM customer_state USING TIMESTAMP ? WHERE customer_id = ?'
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from importlib import resources
from string import Template
from typing import Any

from cassandra.metadata import protect_name
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType

from streams.errors import ConfigError, StoreUnavailable
from streams.store.codec import (
    CUSTOMER_TABLES,
    LEDGER_COLUMNS,
    SNAPSHOT_COLUMNS,
    CustomerRows,
)
from streams.store.visitor_rows import VISITOR_TABLES

#: Cassandra's largest TTL (20 years).
MAX_TTL_S = 630_720_000
#: The latest expiry Cassandra accepts in its Cassandra 4 storage compatibility mode
#: (5.0's default): 2038-01-19T03:14:06Z, in seconds since the epoch (CASSANDRA-14092).
EXPIRY_LIMIT_S = 2_147_483_646
#: Room for the server's clock running ahead of ours.
EXPIRY_MARGIN_S = 86_400
DEFAULT_PORT = 9042
#: Columns of type ``timestamp`` (``recent`` is a list of them).
TIME_COLUMNS = frozenset({
    "master_updated_at", "first_purchase_at", "last_purchase_at", "last_event_at",
    "decided_at", "scored_at", "assigned_at", "occurred_at", "expires_at", "created_at",
    "send_at", "requested_at", "resolved_at",
})
OUTBOX_COLUMNS = ("partition_key", "event_id", "outputs", "expires_at")
DECISION_COLUMNS = ("customer_id", "decided_at", "decision_id", "payload", "expires_at")
STATS_COLUMNS = ("campaign_id", "variant", "cohort", "sends", "clicks", "conversions",
                 "revenue_cents", "revenue_sq_cents")
PROPOSAL_COLUMNS = ("proposal_id", "customer_id", "campaign_id", "created_at", "expires_at",
                    "status", "payload", "resolved_at", "resolved_by", "note")
#: The table that holds every customer: one partition per customer, one row per
#: part of the state (``part``, ``item``), so one request reads a customer.
STATE_TABLE = "customer_state"
#: ``part`` of the rows that stand for each customer table of the codec (the tables
#: of the earlier layout, which ``relevanz store migrate`` copies from).
PARTS: dict[str, str] = {
    "customers": "profile",
    "customer_consent": "consent",
    "customer_interests": "interest",
    "customer_tags": "tag",
    "interactions": "interaction",
    "customer_pending_sends": "pending",
}
#: Columns of ``customer_state``: the key, then every column of every customer table
#: once (a part leaves the others' columns empty, which Cassandra does not store).
STATE_COLUMNS: tuple[str, ...] = (
    "customer_id", "part", "item",
    *dict.fromkeys(c for columns in CUSTOMER_TABLES.values() for c in columns[1:]))
#: Columns the read of a customer returns: ``part``, then the value columns.
STATE_READ_COLUMNS = ("part", *STATE_COLUMNS[3:])
_NAIVE_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - the driver returns naive UTC datetimes
_MS = timedelta(milliseconds=1)


# -- statements ------------------------------------------------------------------


def _insert(table: str, columns: Sequence[str], ttl: bool = False) -> str:
    using = "USING TTL ? AND TIMESTAMP ?" if ttl else "USING TIMESTAMP ?"
    return (f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - names are constants
            f"VALUES ({', '.join('?' * len(columns))}) {using}")


def _statements() -> dict[str, str]:
    statements: dict[str, str] = {}
    for table, columns in CUSTOMER_TABLES.items():
        statements[f"insert_{PARTS[table]}"] = _insert(
            STATE_TABLE, ("customer_id", "part", "item", *columns[1:]), ttl=table == "interactions")
    for table in (STATE_TABLE, "event_ledger", "outbox", *VISITOR_TABLES):
        statements[f"truncate_{table}"] = f"TRUNCATE {table}"
    statements.update({
        "delete_customer_state": ("DELETE FROM customer_state USING TIMESTAMP ? "
                                  "WHERE customer_id = ?"),
        "select_customer_state": (f"SELECT {', '.join(STATE_READ_COLUMNS)} "  # noqa: S608 - constant names
                                  "FROM customer_state WHERE customer_id = ?"),
        "select_customer_states": (f"SELECT customer_id, {', '.join(STATE_READ_COLUMNS)} "  # noqa: S608 - constant names
                                   "FROM customer_state WHERE customer_id IN ?"),
        "insert_event_ledger": _insert("event_ledger", LEDGER_COLUMNS, ttl=True),
        "delete_event_ledger": "DELETE FROM event_ledger USING TIMESTAMP ? WHERE partition_key = ?",
        "select_event_ledger": ("SELECT event_id, expires_at FROM event_ledger "
                                "WHERE partition_key = ? AND event_id IN ?"),
        "insert_outbox": _insert("outbox", OUTBOX_COLUMNS, ttl=True),
        "select_outbox": ("SELECT event_id, outputs, expires_at FROM outbox "
                          "WHERE partition_key = ? AND event_id IN ?"),
        "delete_outbox": ("DELETE FROM outbox USING TIMESTAMP ? "
                          "WHERE partition_key = ? AND event_id = ?"),
        "scan_customers": "SELECT DISTINCT customer_id FROM customer_state",
        "select_customer_ledger": ("SELECT event_id, expires_at FROM event_ledger "
                                   "WHERE partition_key = ?"),
        "insert_forgotten": "INSERT INTO forgotten (ref, requested_at) VALUES (?, ?)",
        "scan_forgotten": "SELECT ref, requested_at FROM forgotten",
        "insert_store_meta": ("INSERT INTO store_meta (meta_key, meta_value) VALUES (?, ?) "
                              "IF NOT EXISTS"),
        "select_store_meta": "SELECT meta_value FROM store_meta WHERE meta_key = ?",
        "insert_customer_decisions": _insert("customer_decisions", DECISION_COLUMNS, ttl=True),
        "select_customer_decisions": (f"SELECT {', '.join(DECISION_COLUMNS)} "  # noqa: S608 - constant
                                      "FROM customer_decisions WHERE customer_id = ?"),
        "delete_customer_decisions": ("DELETE FROM customer_decisions USING TIMESTAMP ? "
                                      "WHERE customer_id = ?"),
        "update_campaign_stats": (
            "UPDATE campaign_stats SET sends = sends + ?, clicks = clicks + ?, "
            "conversions = conversions + ?, revenue_cents = revenue_cents + ?, "
            "revenue_sq_cents = revenue_sq_cents + ? "
            "WHERE campaign_id = ? AND variant = ? AND cohort = ?"),
        "select_campaign_stats": (f"SELECT {', '.join(STATS_COLUMNS)} FROM campaign_stats "  # noqa: S608 - constant
                                  "WHERE campaign_id = ?"),
        "scan_campaign_stats": f"SELECT {', '.join(STATS_COLUMNS)} FROM campaign_stats",  # noqa: S608 - constant
        "insert_proposals": (f"INSERT INTO proposals ({', '.join(PROPOSAL_COLUMNS)}) "  # noqa: S608 - constant
                             f"VALUES ({', '.join('?' * len(PROPOSAL_COLUMNS))}) IF NOT EXISTS"),
        "select_proposals": (f"SELECT {', '.join(PROPOSAL_COLUMNS)} FROM proposals "  # noqa: S608 - constant
                             "WHERE proposal_id = ?"),
        "scan_proposals": f"SELECT {', '.join(PROPOSAL_COLUMNS)} FROM proposals",  # noqa: S608 - constant
        "resolve_proposals": (
            "UPDATE proposals SET status = ?, resolved_at = ?, resolved_by = ?, note = ? "
            "WHERE proposal_id = ? IF status = 'proposed'"),
        "insert_visitor_sessions": ("INSERT INTO visitor_sessions (visitor_id, payload, "
                                    "expires_at) VALUES (?, ?, ?) USING TTL ? AND TIMESTAMP ?"),
        "select_visitor_sessions": ("SELECT visitor_id, payload, expires_at FROM visitor_sessions "
                                    "WHERE visitor_id IN ?"),
        "delete_visitor_sessions": ("DELETE FROM visitor_sessions USING TIMESTAMP ? "
                                    "WHERE visitor_id = ?"),
        "truncate_visitor_sessions": "TRUNCATE visitor_sessions",
        "insert_model_snapshots": _insert("model_snapshots", SNAPSHOT_COLUMNS),
        "insert_visitors": ("INSERT INTO visitors (visitor_id, customer_id, state, expires_at) "
                            "VALUES (?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"),
        "select_visitors": ("SELECT visitor_id, customer_id, state, expires_at FROM visitors "
                            "WHERE visitor_id IN ?"),
        "delete_visitors": "DELETE FROM visitors USING TIMESTAMP ? WHERE visitor_id = ?",
        "insert_visitors_by_customer": ("INSERT INTO visitors_by_customer (customer_id, "
                                        "visitor_id, expires_at) VALUES (?, ?, ?) "
                                        "USING TTL ? AND TIMESTAMP ?"),
        "select_visitors_by_customer": ("SELECT visitor_id, expires_at FROM "
                                        "visitors_by_customer WHERE customer_id = ?"),
        "delete_visitors_by_customer": ("DELETE FROM visitors_by_customer USING TIMESTAMP ? "
                                        "WHERE customer_id = ? AND visitor_id = ?"),
        "delete_outbox_partition": ("DELETE FROM outbox USING TIMESTAMP ? "
                                    "WHERE partition_key = ?"),
        "select_model_snapshots": (f"SELECT {', '.join(SNAPSHOT_COLUMNS)} "  # noqa: S608 - constant
                                   "FROM model_snapshots WHERE model_id = ? LIMIT 1"),
    })
    return statements


#: Every CQL statement the store runs, by name; all are prepared at open.
STATEMENTS: dict[str, str] = _statements()


# -- schema file ------------------------------------------------------------------


def schema_text() -> str:
    """The text of ``schemas/cassandra.cql``, placeholders and all."""
    try:
        return resources.files("schemas").joinpath("cassandra.cql").read_text(encoding="utf-8")
    except OSError as exc:
        raise StoreUnavailable(
            f"the Cassandra schema schemas/cassandra.cql is not installed: {exc}") from exc


def replication_cql(spec: str) -> str:
    """The CQL replication map of a ``RELEVANZ_CASSANDRA_REPLICATION`` value.

    >>> replication_cql("SimpleStrategy:3")
    "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    >>> replication_cql("NetworkTopologyStrategy:dc1=3,dc2=2")
    "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
    """
    strategy, _, rest = spec.partition(":")
    if strategy == "SimpleStrategy":
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {int(rest)}}}"
    pairs = (part.partition("=") for part in rest.split(","))
    dcs = ", ".join(f"'{dc.strip()}': {int(n)}" for dc, _, n in pairs)
    return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"


def schema_statements(keyspace: str, replication: str) -> list[str]:
    """The statements of the schema file for ``keyspace``, comments removed, in order."""
    text = Template(schema_text()).substitute(
        keyspace=protect_name(keyspace), replication=replication_cql(replication))
    text = re.sub(r"--[^\n]*", "", text)
    return [" ".join(part.split()) for part in text.split(";") if part.strip()]


def _split_top_level(body: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in body:
        if char in "(<":
            depth += 1
        elif char in ")>":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def schema_tables() -> dict[str, dict[str, str]]:
    """Table -> column -> CQL type, as the schema file creates them."""
    tables: dict[str, dict[str, str]] = {}
    for statement in schema_statements("ks", "SimpleStrategy:1"):
        found = re.match(r"CREATE TABLE IF NOT EXISTS (?:\S+\.)?(\w+) \(", statement)
        if not found:
            continue
        body, depth = statement[found.end():], 1
        for end, char in enumerate(body):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                body = body[:end]
                break
        columns = {}
        for definition in _split_top_level(body):
            if definition.upper().startswith("PRIMARY KEY"):
                continue
            name, kind = definition.split(None, 1)
            columns[name] = kind.removesuffix("PRIMARY KEY").strip()
        tables[found.group(1)] = columns
    return tables


# -- configuration ------------------------------------------------------------------


def parse_store_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """Contact points and keyspace of ``cassandra://host[,host][:port]/keyspace``.

    A host without a port gets the last port given, else 9042.

    >>> parse_store_url("cassandra://db1,db2:9142/relevanz")
    ([('db1', 9142), ('db2', 9142)], 'relevanz')
    >>> parse_store_url("cassandra://db1/relevanz-prod")
    Traceback (most recent call last):
    ...
    streams.errors.ConfigError: RELEVANZ_STORE_URL: keyspace 'relevanz-prod' must be ...
    """
    hosts, _, keyspace = url.removeprefix("cassandra://").partition("/")
    if not re.fullmatch(r"\w{1,48}", keyspace, re.ASCII):
        raise ConfigError(
            f"RELEVANZ_STORE_URL: keyspace {keyspace!r} must be 1 to 48 letters, digits or '_'")
    named: list[tuple[str, int | None]] = []
    for entry in (h.strip() for h in hosts.split(",")):
        host, colon, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
        if not host or (colon and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ConfigError(
                f"RELEVANZ_STORE_URL: expected cassandra://host[,host][:port]/keyspace, "
                f"got {url!r}")
        named.append((host, int(port) if colon else None))
    ports = [port for _, port in named if port is not None]
    default = ports[-1] if ports else DEFAULT_PORT
    return [(host, default if port is None else port) for host, port in named], keyspace


# -- rows and batches ---------------------------------------------------------------


def driver_ms(value: datetime | None) -> int | None:
    """Milliseconds of a naive UTC datetime from the driver."""
    return None if value is None else round((value - _NAIVE_EPOCH) / _MS)


def codec_row(table: str, row: Sequence[Any]) -> tuple[Any, ...]:
    """A driver row of ``table`` in the codec's shapes (times as ms)."""
    return tuple(
        driver_ms(value) if name in TIME_COLUMNS
        else [driver_ms(t) for t in value or ()] if name == "recent"
        else value
        for name, value in zip(CUSTOMER_TABLES[table], row, strict=True))


def bindable(row: Iterable[Any]) -> list[Any]:
    """Values to bind: absent values and empty collections are left unset, not null.

    Binding null would write a tombstone per cell; the partition was just
    deleted anyway.
    """
    return [UNSET_VALUE if value is None or value in ({}, []) else value for value in row]


def ttl_seconds(remaining_ms: int, wall_s: float | None = None) -> int:
    """A TTL in whole seconds that does not end before ``remaining_ms``; 0 (no TTL) when
    the expiry would pass what the server accepts.

    Cassandra rejects a write whose expiry passes :data:`EXPIRY_LIMIT_S`
    (2038-01-19, in the storage compatibility mode 5.0 starts in) or whose TTL
    passes :data:`MAX_TTL_S`.  Such a row (a retention of decades) is written
    without a TTL: reads still hide it once ``expires_at`` passes, and the
    customer's next save rewrites it.  ``wall_s`` is the server's clock
    (the TTL counts from the write), by default this machine's.

    >>> ttl_seconds(1001, wall_s=0)
    2
    >>> ttl_seconds(10**15, wall_s=0), ttl_seconds(10 * 365 * 86400_000, wall_s=2_000_000_000)
    (0, 0)
    """
    wall = time.time() if wall_s is None else wall_s
    horizon = min(MAX_TTL_S, int(EXPIRY_LIMIT_S - wall) - EXPIRY_MARGIN_S)
    ttl = max(1, math.ceil(remaining_ms / 1000))
    return 0 if ttl > horizon else ttl


def item_of(table: str, row: Sequence[Any]) -> str:
    """The ``item`` of a codec row of ``table`` in ``customer_state``: its key there, as text.

    >>> item_of("customer_tags", ("c-1", "fashion", "style", 0, "e-1"))
    'fashion'
    >>> item_of("interactions", ("c-1", 1764979200000, "e-7", "click", None, None, None, 1))
    '1764979200000:e-7'
    """
    if table == "customers":
        return ""
    if table == "interactions":
        return f"{row[1]}:{row[2]}"
    return str(row[1])


def state_values(table: str, row: Sequence[Any]) -> tuple[Any, ...]:
    """The values of ``insert_<part>`` for a codec row of ``table``, up to TTL and timestamp."""
    return (row[0], PARTS[table], item_of(table, row), *bindable(row[1:]))


_PICK: dict[str, tuple[str, tuple[int, ...]]] = {
    part: (table, tuple(STATE_READ_COLUMNS.index(c) for c in CUSTOMER_TABLES[table][1:]))
    for table, part in PARTS.items()}


def customer_rows(customer_id: str, rows: Iterable[Sequence[Any]]
                  ) -> dict[str, list[tuple[Any, ...]]]:
    """Rows read from ``customer_state`` (:data:`STATE_READ_COLUMNS`) as the rows of each
    customer table in the codec's shapes (times as ms), in the order read.

    A part this version does not know is left out.
    """
    tables: dict[str, list[tuple[Any, ...]]] = {table: [] for table in CUSTOMER_TABLES}
    for row in rows:
        found = _PICK.get(row[0])
        if found is not None:
            table, pick = found
            tables[table].append(codec_row(table, (customer_id, *(row[i] for i in pick))))
    return tables


def customer_batch(prepared: Mapping[str, Any], rows: CustomerRows, now_ms: int,
                   stamp: int) -> Any:
    """One customer's replacing batch: partition deleted at ``stamp - 1``, rows at ``stamp``.

    A tombstone wins over a write with the same timestamp, so the new rows
    must be younger than the deletion by at least one microsecond.
    """
    batch = BatchStatement(batch_type=BatchType.LOGGED)
    batch.add(prepared["delete_customer_state"], (stamp - 1, rows.customer[0]))
    for table, table_rows in (("customers", [rows.customer]),
                              ("customer_consent", rows.consent),
                              ("customer_interests", rows.interests),
                              ("customer_tags", rows.tags),
                              ("customer_pending_sends", rows.pending)):
        for row in table_rows:
            batch.add(prepared[f"insert_{PARTS[table]}"], (*state_values(table, row), stamp))
    for entry in rows.history:
        batch.add(prepared["insert_interaction"],
                  (*state_values("interactions", entry), ttl_seconds(entry[-1] - now_ms), stamp))
    return batch


# -- the earlier layout: six customer tables, copied by ``relevanz store migrate`` ----

#: A column every row of each customer table of the earlier layout has, whose write
#: time and TTL are the row's (a save wrote all of a row's cells at once).
LEGACY_WITNESS: dict[str, str] = {
    "customers": "orders",
    "customer_consent": "granted",
    "customer_interests": "score",
    "customer_tags": "topic",
    "interactions": "expires_at",
    "customer_pending_sends": "channel",
}
#: Every customer of the earlier layout (a customer exists when its customers row does).
LEGACY_SCAN = "SELECT customer_id FROM customers"


def legacy_select(table: str) -> str:
    """One customer's rows of an earlier-layout table, each with its write time and TTL.

    >>> legacy_select("customer_tags")  # doctest: +NORMALIZE_WHITESPACE
    'SELECT customer_id, tag, topic, assigned_at, caused_by, WRITETIME(topic), TTL(topic)
     FROM customer_tags WHERE customer_id = ?'
    """
    witness = LEGACY_WITNESS[table]
    return (f"SELECT {', '.join(CUSTOMER_TABLES[table])}, WRITETIME({witness}), "  # noqa: S608 - constant names
            f"TTL({witness}) FROM {table} WHERE customer_id = ?")


def legacy_statements(tables: Iterable[str]) -> dict[str, str]:
    """Statements on the earlier layout's ``tables``, which erasure and reset reach while
    they exist (so no erased or reset customer comes back from them).

    >>> legacy_statements(["interactions"])["legacy_delete_interactions"]
    'DELETE FROM interactions USING TIMESTAMP ? WHERE customer_id = ?'
    """
    statements: dict[str, str] = {}
    for table in tables:
        statements[f"legacy_delete_{table}"] = (
            f"DELETE FROM {table} USING TIMESTAMP ? WHERE customer_id = ?")  # noqa: S608 - constant
        statements[f"legacy_truncate_{table}"] = f"TRUNCATE {table}"
    return statements


def copy_batch(prepared: Mapping[str, Any], customer_id: str,
               found: Mapping[str, Sequence[Sequence[Any]]]) -> Any | None:
    """The batch that writes one customer's earlier-layout rows into ``customer_state`` as
    they were; None when it has no ``customers`` row (then it is no customer).

    ``found`` holds the rows of :func:`legacy_select` per table.  Each row is
    written with its own write time and remaining TTL, after a deletion of the
    partition just before the oldest of them, as the earlier layout's save did.
    So the copy is idempotent, and never overwrites a save made since in
    ``customer_state`` (younger), while it does replace an earlier copy.
    """
    if not found.get("customers"):
        return None
    stamps = [row[-2] for rows in found.values() for row in rows if row[-2] is not None]
    oldest = min(stamps, default=1)
    batch = BatchStatement(batch_type=BatchType.LOGGED)
    batch.add(prepared["delete_customer_state"], (oldest - 1, customer_id))
    for table, rows in found.items():
        width = len(CUSTOMER_TABLES[table])
        for row in rows:
            stamp = oldest if row[width] is None else row[width]
            ttl = (row[width + 1] or 0,) if table == "interactions" else ()
            batch.add(prepared[f"insert_{PARTS[table]}"],
                      (*state_values(table, codec_row(table, row[:width])), *ttl, stamp))
    return batch


def ledger_batch(prepared: Mapping[str, Any], partition_key: str, event_ids: Sequence[str],
                 expires_ms: int, ttl_s: int, stamp: int) -> Any:
    """Ledger entries of one partition (a single mutation, so unlogged is atomic too)."""
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for event_id in event_ids:
        batch.add(prepared["insert_event_ledger"],
                  (partition_key, event_id, expires_ms, ttl_s, stamp))
    return batch


def erasure_batch(prepared: Mapping[str, Any], customer_id: str, stamp: int,
                  legacy: Iterable[str] = ()) -> Any:
    """Every partition of one customer deleted, its ledger entries included, and its
    partitions of the ``legacy`` tables (the earlier layout, while they exist)."""
    batch = BatchStatement(batch_type=BatchType.LOGGED)
    batch.add(prepared["delete_customer_state"], (stamp, customer_id))
    for table in legacy:
        batch.add(prepared[f"legacy_delete_{table}"], (stamp, customer_id))
    batch.add(prepared["delete_event_ledger"], (stamp, customer_id))
    batch.add(prepared["delete_customer_decisions"], (stamp, customer_id))
    return batch
