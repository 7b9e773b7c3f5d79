"""The Cassandra store: the production :class:`streams.store.Store`, on cassandra-driver.

Schema: ``schemas/cassandra.cql`` (applied by ``relevanz store migrate``).
Rows are mapped by :mod:`streams.store.codec`, the same mapping the embedded
store uses; the CQL statements and batches are built by
:mod:`streams.store.cql`.  How it talks to the cluster:

- **Routing and consistency.** One execution profile: token-aware routing
  over a DC-aware round robin (``RELEVANZ_CASSANDRA_LOCAL_DC``), the
  consistency of ``RELEVANZ_CASSANDRA_CONSISTENCY`` for reads and writes,
  ``RELEVANZ_STORE_TIMEOUT_S`` per request, and a retry policy that also
  retries a timed-out write once (every write here is idempotent, see below).
- **Prepared statements only** (:data:`streams.store.cql.STATEMENTS`), prepared once at
  :meth:`CassandraStore.open`; DDL in :meth:`CassandraStore.migrate` is the
  exception.
- **Never blocking the event loop.** Requests go out with
  ``Session.execute_async``; the driver calls back on its I/O thread and the
  result is handed to the event loop with ``call_soon_threadsafe``.  Connecting,
  preparing and DDL block, so they run in a worker thread.  At most
  :data:`MAX_IN_FLIGHT` requests are outstanding.
- **One partition per customer.** A customer is the rows of its partition of
  ``customer_state`` (one per part: profile, consent purpose, interest, tag,
  interaction, pending send), so loading one is one single-partition read.
- **Replace = delete at t-1, write at t.** Each customer is saved as one
  batch of its own partition (a single mutation: atomic, isolated, no batch
  log and exempt from the batch size limits).  The batch deletes the
  customer's partition ``USING TIMESTAMP t-1`` and inserts the new rows ``USING TIMESTAMP t``:
  at equal timestamps Cassandra lets a tombstone win, so the rows must be one
  microsecond younger than the deletion.  ``t`` comes from a monotonic clock,
  so a later save always shadows an earlier one, and replaying a write (a
  retry) changes nothing.  Across processes the clocks must agree to within
  the time a partition takes to move between workers.
- **TTLs.** History and ledger rows are written ``USING TTL`` (so Cassandra
  drops them) and carry ``expires_at``, which reads compare with their ``now``:
  a TTL counts from the server's clock at write time, ``now`` is a parameter.
- **Errors.** Driver errors become :class:`~streams.errors.StoreUnavailable`
  naming the hosts, the keyspace, the operation and what to check.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from cassandra import (
    ConsistencyLevel,
    DriverException,
    InvalidRequest,
    OperationTimedOut,
    Timeout,
    Unavailable,
    UnresolvableContactPoints,
    WriteType,
)
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
)
from cassandra.concurrent import execute_concurrent
from cassandra.metadata import protect_name
from cassandra.policies import DCAwareRoundRobinPolicy, RetryPolicy, TokenAwarePolicy
from cassandra.protocol import ErrorMessage, UnavailableErrorMessage
from cassandra.query import SimpleStatement, tuple_factory
from cassandra.timestamps import MonotonicTimestampGenerator

from agents.core.customer import CustomerState
from agents.core.visitors import VisitorState
from streams.errors import ConfigError, StoreUnavailable
from streams.settings import Settings
from streams.store.codec import (
    CUSTOMER_TABLES,
    CustomerRows,
    counts_of,
    duration_ms,
    from_ms,
    latest_per_customer,
    proposal_of,
    proposal_row,
    rows_of,
    state_of,
    summed_stats,
    to_ms,
)
from streams.store.cql import (
    LEGACY_SCAN,
    STATE_TABLE,
    STATEMENTS,
    copy_batch,
    customer_batch,
    customer_rows,
    driver_ms,
    erasure_batch,
    ledger_batch,
    legacy_select,
    legacy_statements,
    parse_store_url,
    schema_statements,
    schema_tables,
    ttl_seconds,
)
from streams.store.protocol import (
    BatchWrite,
    CampaignCounts,
    EventKey,
    Snapshot,
    StoredDecision,
    StoredProposal,
)
from streams.store.visitor_rows import VISITOR_TABLES, visitor_blob, visitor_of

log = structlog.get_logger(__name__)

#: Most requests outstanding at once (the driver allows far more per connection).
MAX_IN_FLIGHT = 256
#: Event ids per ledger lookup (``event_id IN ?``).
LEDGER_IN_CHUNK = 100
#: Customers per ``IN`` read when several are loaded at once.
LOAD_IN_CHUNK = 100
#: Rows per ledger batch (one partition, so one mutation).
LEDGER_BATCH = 500
#: Columns added to tables after their first release: (table, column, CQL type).
#: ``migrate`` adds them to keyspaces created before (CREATE ... IF NOT EXISTS does not).
#: These two tables are of the earlier customer layout, which migrate copies from.
ADDED_COLUMNS = (("customers", "predictions", "blob"), ("customers", "parked", "blob"),
                 ("customer_consent", "earlier", "blob"))
#: Table options a later schema changed: (table, option, value); migrate sets them
#: on keyspaces made before (CREATE TABLE IF NOT EXISTS leaves an existing table be).
CHANGED_OPTIONS = (("outbox", "gc_grace_seconds", 10800),)
#: Customers per page of the earlier layout's copy, and requests in flight while copying.
COPY_PAGE = 200
COPY_CONCURRENCY = 64
#: DDL waits for the nodes to agree on the schema, which takes longer than a read.
DDL_TIMEOUT_S = 60.0
_DRIVER_ERRORS = (DriverException, NoHostAvailable, ErrorMessage, OSError)


@contextmanager
def _connect_attempt_not_logged() -> Iterator[None]:
    """Drop the driver's log records of this thread while it connects.

    The driver logs every failed connection attempt with a traceback; the
    :class:`StoreUnavailable` raised afterwards says the same in one line.  The
    driver's own threads (reconnection, topology changes) still log.
    """
    thread = threading.get_ident()
    loggers = [logging.getLogger(name) for name in
               ("cassandra.cluster", "cassandra.connection", "cassandra.pool")]

    def elsewhere(record: logging.LogRecord) -> bool:
        return record.thread != thread

    for logger in loggers:
        logger.addFilter(elsewhere)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(elsewhere)


class _IdempotentWriteRetryPolicy(RetryPolicy):  # type: ignore[misc] # cassandra-driver ships no type hints
    """The driver's default retry policy, plus one retry of any timed-out write.

    The default retries only batch-log timeouts, because replaying a write is
    not safe in general.  Here it is: every write carries an explicit
    timestamp, so a replay writes the very same cells.
    """

    _REPLAYABLE = frozenset({WriteType.SIMPLE, WriteType.BATCH, WriteType.UNLOGGED_BATCH,
                             WriteType.BATCH_LOG})

    def on_write_timeout(self, query: Any, consistency: int, write_type: int,
                         required_responses: int, received_responses: int,
                         retry_num: int) -> tuple[int, int | None]:
        if retry_num == 0 and write_type in self._REPLAYABLE:
            return self.RETRY, consistency
        return self.RETHROW, None


class _Pages:
    """The pages of one request, handed from the driver's I/O thread to the event loop."""

    def __init__(self, response: ResponseFuture) -> None:
        self._loop = asyncio.get_running_loop()
        self._response = response
        self._next: asyncio.Future[list[Any]] = self._loop.create_future()
        # Both callbacks run on the driver's I/O thread, once per page.
        response.add_callbacks(self._on_rows, self._on_error)

    def _on_rows(self, rows: list[Any] | None) -> None:
        self._loop.call_soon_threadsafe(self._settle, rows or [], None)

    def _on_error(self, exc: BaseException) -> None:
        self._loop.call_soon_threadsafe(self._settle, None, exc)

    def _settle(self, rows: list[Any] | None, exc: BaseException | None) -> None:
        if self._next.done():  # the awaiting task was cancelled
            return
        if exc is not None:
            self._next.set_exception(exc)
        else:
            self._next.set_result(rows or [])

    async def __aiter__(self) -> AsyncIterator[list[Any]]:
        while True:
            yield await self._next
            if not self._response.has_more_pages:
                return
            self._next = self._loop.create_future()
            self._response.start_fetching_next_page()


class CassandraStore:
    """The :class:`streams.store.Store` protocol on a Cassandra cluster."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.contact_points, self.keyspace = parse_store_url(settings.store_url)
        self._where = (",".join(f"{h}:{p}" for h, p in self.contact_points)
                       + f"/{self.keyspace}")
        self._clock = MonotonicTimestampGenerator()
        self._cluster: Any = None
        self._session: Any = None
        self._prepared: dict[str, Any] = {}
        #: Tables of the earlier customer layout the keyspace still has (see migrate).
        self._legacy: list[str] = []
        self._limit = asyncio.Semaphore(MAX_IN_FLIGHT)

    # -- connection --------------------------------------------------------------

    def new_cluster(self) -> Any:
        """A (not yet connected) driver ``Cluster`` configured from the settings."""
        s = self.settings
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=s.cassandra_local_dc)),
            retry_policy=_IdempotentWriteRetryPolicy(),
            consistency_level=ConsistencyLevel.name_to_value[s.cassandra_consistency.upper()],
            request_timeout=s.store_timeout_s,
            row_factory=tuple_factory,
        )
        return Cluster(
            contact_points=self.contact_points,
            # Cassandra 4.0 and later speak v5 (framing with checksums); pinned, so the
            # driver does not start lower and renegotiate on every connect.
            protocol_version=5,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=s.store_timeout_s,
            control_connection_timeout=s.store_timeout_s,
        )

    def _check_local_dc(self, cluster: Any) -> None:
        dcs = {host.datacenter for host in cluster.metadata.all_hosts() if host.datacenter}
        if dcs and self.settings.cassandra_local_dc not in dcs:
            raise ConfigError(
                f"RELEVANZ_CASSANDRA_LOCAL_DC: {self.settings.cassandra_local_dc!r} is not a "
                f"data centre of the cluster at {self._where} (it has {', '.join(sorted(dcs))})")

    def _check_schema(self, cluster: Any) -> None:
        keyspace = cluster.metadata.keyspaces.get(self.keyspace)
        if keyspace is None:
            raise StoreUnavailable(
                f"cassandra {self._where}: keyspace {self.keyspace!r} does not exist; "
                "run `relevanz store migrate` to create it")
        missing = []
        for table, columns in schema_tables().items():
            found = keyspace.tables.get(table)
            if found is None:
                missing.append(table)
            else:
                missing.extend(f"{table}.{c}" for c in columns if c not in found.columns)
        if missing:
            raise StoreUnavailable(
                f"cassandra {self._where}: the schema lacks {', '.join(missing)}; "
                "run `relevanz store migrate`")

    def _connected(self, operation: str) -> tuple[Any, Any]:
        """A connected cluster and session (blocking); on failure nothing stays open."""
        cluster = None
        ok = False
        try:
            cluster = self.new_cluster()
            with _connect_attempt_not_logged():
                session = cluster.connect()
            self._check_local_dc(cluster)
            ok = True
            return cluster, session
        except NoHostAvailable as exc:
            if cluster is not None:  # a wrong local data centre leaves no host: say that
                self._check_local_dc(cluster)
            raise self._unavailable(operation, exc) from exc
        except _DRIVER_ERRORS as exc:
            raise self._unavailable(operation, exc) from exc
        finally:
            if not ok and cluster is not None:
                cluster.shutdown()

    def _connect(self) -> tuple[Any, Any, dict[str, Any]]:
        """Connect, check the schema, prepare every statement (blocking)."""
        cluster, session = self._connected("open")
        ok = False
        try:
            self._check_schema(cluster)
            session.set_keyspace(self.keyspace)
            tables = cluster.metadata.keyspaces[self.keyspace].tables
            self._legacy = [table for table in CUSTOMER_TABLES if table in tables]
            statements = {**STATEMENTS, **legacy_statements(self._legacy)}
            prepared = {name: session.prepare(text) for name, text in statements.items()}
            ok = True
            return cluster, session, prepared
        except _DRIVER_ERRORS as exc:
            raise self._unavailable("open", exc) from exc
        finally:
            if not ok:
                cluster.shutdown()

    async def open(self) -> None:
        if self._session is None:
            self._cluster, self._session, self._prepared = await asyncio.to_thread(self._connect)

    async def close(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    async def migrate(self, drop_old_tables: bool = False) -> None:
        """Create the keyspace (with the configured replication) and the tables, and copy
        the customers of the earlier layout into ``customer_state``.

        The copy runs whenever the earlier layout's tables exist and is
        idempotent (:func:`streams.store.cql.copy_batch`); ``drop_old_tables``
        drops them after it.
        """

        def run() -> None:
            cluster, session = self._connected("migrate")
            try:
                for statement in schema_statements(self.keyspace,
                                                   self.settings.cassandra_replication):
                    self._ddl(session, statement)
                self._upgrade_tables(session)
                legacy = [table for table in CUSTOMER_TABLES if table in self._tables(session)]
                if "customers" in legacy:
                    copied = _copy_legacy(session, self.keyspace, legacy)
                    log.info("store_customers_copied", customers=copied, tables=legacy)
                for table in legacy if drop_old_tables else ():
                    self._ddl(session, f"DROP TABLE IF EXISTS "
                                       f"{protect_name(self.keyspace)}.{table}")
            except _DRIVER_ERRORS as exc:
                raise self._unavailable("migrate", exc) from exc
            finally:
                cluster.shutdown()

        await asyncio.to_thread(run)

    def _ddl(self, session: Any, statement: str) -> None:
        """Run a schema change and wait for the nodes to agree on it (blocking)."""
        result = session.execute(statement, timeout=DDL_TIMEOUT_S)
        if not result.response_future.is_schema_agreed:
            raise StoreUnavailable(
                f"cassandra {self._where}: migrate: the nodes did not agree on "
                "the schema in time; check that every node is up, then run "
                "`relevanz store migrate` again")

    def _tables(self, session: Any) -> set[str]:
        """The tables the keyspace has (blocking)."""
        rows = session.execute("SELECT table_name FROM system_schema.tables "
                               "WHERE keyspace_name = %s", (self.keyspace,),
                               timeout=DDL_TIMEOUT_S)
        return {row[0] for row in rows}

    def _upgrade_tables(self, session: Any) -> None:
        """Bring tables made by an older schema up to date (blocking)."""
        tables = self._tables(session)
        # Keyspaces created before a column was added: add it.
        for table, column, cql_type in ADDED_COLUMNS:
            if table not in tables:
                continue
            rows = session.execute(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
                "AND table_name = %s", (self.keyspace, table), timeout=DDL_TIMEOUT_S)
            if column not in {row[0] for row in rows}:
                session.execute(f"ALTER TABLE {protect_name(self.keyspace)}.{table} "
                                f"ADD {column} {cql_type}", timeout=DDL_TIMEOUT_S)
        for table, option, value in CHANGED_OPTIONS:
            row = session.execute(
                f"SELECT {option} FROM system_schema.tables WHERE keyspace_name = %s "  # noqa: S608 - constant
                "AND table_name = %s", (self.keyspace, table), timeout=DDL_TIMEOUT_S
            ).one()
            if row is not None and row[0] != value:
                session.execute(f"ALTER TABLE {protect_name(self.keyspace)}.{table} "
                                f"WITH {option} = {value}", timeout=DDL_TIMEOUT_S)

    # -- requests -----------------------------------------------------------------

    def _unavailable(self, operation: str, exc: BaseException) -> StoreUnavailable:
        """A readable :class:`StoreUnavailable` for a driver error."""
        consistency = self.settings.cassandra_consistency
        if isinstance(exc, NoHostAvailable) and (replicas := _replicas_missing(exc)):
            # Every host answered, but too few replicas of the data are up for the
            # consistency level: not a connection problem.
            alive, required = replicas
            detail = (f"only {alive} of {required} replicas needed for consistency "
                      f"{consistency} are alive (RELEVANZ_CASSANDRA_CONSISTENCY)")
        elif isinstance(exc, NoHostAvailable):
            errors = exc.errors or {}
            tried = ("; ".join(f"{host}: {error}" for host, error in errors.items())
                     if isinstance(errors, dict) else ", ".join(map(str, errors)))
            detail = (f"no host answered ({tried or 'none reachable'}); check that the hosts "
                      f"are up and that RELEVANZ_CASSANDRA_LOCAL_DC "
                      f"({self.settings.cassandra_local_dc}) is their data centre")
        elif isinstance(exc, UnresolvableContactPoints):
            detail = "none of the hosts resolves to an address (RELEVANZ_STORE_URL)"
        elif isinstance(exc, OperationTimedOut):
            detail = (f"no answer from {exc.last_host or 'any host'} within "
                      f"{self.settings.store_timeout_s:g}s (RELEVANZ_STORE_TIMEOUT_S)")
        elif isinstance(exc, Unavailable):
            detail = (f"only {exc.alive_replicas} of {exc.required_replicas} replicas needed for "
                      f"consistency {consistency} are alive (RELEVANZ_CASSANDRA_CONSISTENCY)")
        elif isinstance(exc, Timeout):
            detail = (f"{exc.received_responses} of {exc.required_responses} replicas needed "
                      f"for consistency {consistency} answered in time ({type(exc).__name__})")
        elif isinstance(exc, InvalidRequest):
            detail = (f"rejected: {exc}; if the schema is out of date, run "
                      "`relevanz store migrate`")
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return StoreUnavailable(f"cassandra {self._where}: {operation} failed: {detail}")

    def _ready(self, operation: str) -> tuple[Any, dict[str, Any]]:
        if self._session is None:
            raise StoreUnavailable(f"cassandra {self._where} is not open ({operation})")
        return self._session, self._prepared

    async def _execute(self, operation: str,
                       make: Callable[[], tuple[Any, Sequence[Any] | None]],
                       timeout_s: float | None = None) -> list[Any]:
        """Every row of one request (all pages).

        ``make`` builds the statement and its parameters once a request slot is
        free, so building thousands of batches does not hold the loop at once.
        """
        session, _ = self._ready(operation)
        async with self._limit:
            try:
                statement, params = make()
                options = {} if timeout_s is None else {"timeout": timeout_s}
                rows: list[Any] = []
                async for page in _Pages(session.execute_async(statement, params, **options)):
                    rows.extend(page)
                return rows
            except _DRIVER_ERRORS as exc:
                raise self._unavailable(operation, exc) from exc

    async def _rows(self, operation: str, statement: Any, params: Sequence[Any] | None,
                    timeout_s: float | None = None) -> list[Any]:
        return await self._execute(operation, lambda: (statement, params), timeout_s)

    async def _all(self, operation: str, batches: list[Callable[[], Any]]) -> None:
        """Run write batches concurrently; every one is awaited, the first error raised."""
        def run(build: Callable[[], Any]) -> Awaitable[list[Any]]:
            return self._execute(operation, lambda: (build(), None))

        results = await asyncio.gather(*(run(b) for b in batches), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            if len(errors) > 1 and isinstance(errors[0], StoreUnavailable):
                raise StoreUnavailable(
                    f"{errors[0]} (and {len(errors) - 1} more of {len(batches)} requests)"
                ) from errors[0]
            raise errors[0]

    # -- event ledger -------------------------------------------------------------

    async def _by_key(self, operation: str, statement: str, keys: Sequence[EventKey]
                      ) -> list[tuple[str, Any]]:
        """``(partition key, row)`` of the rows ``statement`` (``partition_key = ? AND
        event_id IN ?``) finds for ``keys``: one request per partition and chunk."""
        _, prepared = self._ready(operation)
        by_partition: dict[str, list[str]] = {}
        for pk, eid in dict.fromkeys(keys):
            by_partition.setdefault(pk, []).append(eid)
        lookups = [(pk, eids[i:i + LEDGER_IN_CHUNK])
                   for pk, eids in by_partition.items()
                   for i in range(0, len(eids), LEDGER_IN_CHUNK)]
        pages = await asyncio.gather(*(
            self._rows(operation, prepared[statement], (pk, eids)) for pk, eids in lookups))
        return [(pk, row) for (pk, _), rows in zip(lookups, pages, strict=True) for row in rows]

    async def seen_events(self, keys: Sequence[EventKey], now: datetime) -> set[EventKey]:
        cutoff = to_ms(now)
        return {(pk, eid) for pk, (eid, expires) in
                await self._by_key("seen_events", "select_event_ledger", keys)
                if (driver_ms(expires) or 0) > cutoff}

    async def unpublished(self, keys: Sequence[EventKey], now: datetime
                          ) -> dict[EventKey, bytes]:
        cutoff = to_ms(now)
        return {(pk, eid): bytes(outputs) for pk, (eid, outputs, expires) in
                await self._by_key("unpublished", "select_outbox", keys)
                if (driver_ms(expires) or 0) > cutoff}

    async def mark_published(self, keys: Sequence[EventKey]) -> None:
        _, prepared = self._ready("mark_published")
        await asyncio.gather(*(self._rows("mark_published", prepared["delete_outbox"],
                                          (self._clock(), pk, eid))
                               for pk, eid in dict.fromkeys(keys)))

    def _ledger_batches(self, keys: Sequence[EventKey], now_ms: int, ttl_ms: int
                        ) -> list[Callable[[], Any]]:
        _, prepared = self._ready("record_events")
        expires, ttl, stamp = now_ms + ttl_ms, ttl_seconds(ttl_ms), self._clock()
        by_partition: dict[str, list[str]] = {}
        for pk, eid in dict.fromkeys(keys):
            by_partition.setdefault(pk, []).append(eid)
        return [partial(ledger_batch, prepared, pk, eids[i:i + LEDGER_BATCH], expires, ttl, stamp)
                for pk, eids in by_partition.items()
                for i in range(0, len(eids), LEDGER_BATCH)]

    async def record_events(
        self, keys: Sequence[EventKey], now: datetime, ttl_s: float
    ) -> None:
        await self._all("record_events",
                        self._ledger_batches(keys, to_ms(now), duration_ms(ttl_s)))

    # -- customers -------------------------------------------------------------------

    def _state_of(self, customer_id: str, rows: list[Any], cutoff: int
                  ) -> CustomerState | None:
        tables = customer_rows(customer_id, rows)
        if not tables["customers"]:
            return None
        # ``item`` orders the history as text: sorted by (occurred_at, event_id) here.
        history = sorted((row for row in tables["interactions"] if row[-1] > cutoff),
                         key=lambda row: (row[1], row[2]))
        return state_of(tables["customers"][0], tables["customer_consent"],
                        tables["customer_interests"], tables["customer_tags"], history,
                        tables["customer_pending_sends"])

    def _by_replica(self, ids: Sequence[str]) -> list[list[str]]:
        """``ids`` in groups of at most :data:`LOAD_IN_CHUNK` that share their replicas, so
        one ``IN`` read asks the nodes of one group only."""
        metadata = self._cluster.metadata
        groups: dict[tuple[str, ...], list[str]] = {}
        for cid in ids:
            replicas = metadata.get_replicas(self.keyspace, cid.encode())
            groups.setdefault(tuple(sorted(str(h.endpoint) for h in replicas)), []).append(cid)
        return [group[i:i + LOAD_IN_CHUNK] for group in groups.values()
                for i in range(0, len(group), LOAD_IN_CHUNK)]

    async def load_customers(
        self, customer_ids: Sequence[str], now: datetime
    ) -> dict[str, CustomerState]:
        _, prepared = self._ready("load_customers")
        ids = list(dict.fromkeys(customer_ids))
        cutoff = to_ms(now)
        if len(ids) == 1:  # one single-partition read, routed to a replica
            rows = await self._rows("load_customers", prepared["select_customer_state"], ids)
            state = self._state_of(ids[0], rows, cutoff)
            return {} if state is None else {ids[0]: state}
        # Several: one ``IN`` read per group of customers on the same replicas. It costs
        # a quarter of the driver and server CPU of one read per customer (README, Store).
        pages = await asyncio.gather(*(
            self._rows("load_customers", prepared["select_customer_states"], (group,))
            for group in self._by_replica(ids)))
        by_customer: dict[str, list[Any]] = {}
        for rows in pages:
            for row in rows:
                by_customer.setdefault(row[0], []).append(row[1:])
        states = ((cid, self._state_of(cid, by_customer.get(cid, []), cutoff)) for cid in ids)
        return {cid: state for cid, state in states if state is not None}

    def _stamped_batch(self, prepared: Mapping[str, Any], rows: CustomerRows, now_ms: int
                       ) -> Any:
        # The clock is read as the batch is built: the latest build is the youngest write.
        return customer_batch(prepared, rows, now_ms, self._clock())

    async def write_batch(self, batch: BatchWrite, now: datetime, ledger_ttl_s: float,
                          history_ttl_s: float) -> None:
        # ``previous`` is not used: each save is one single-partition batch that
        # replaces the customer, which Cassandra applies without reading.
        _, prepared = self._ready("write_batch")
        now_ms = to_ms(now)
        history_ttl_ms, ledger_ttl_ms = duration_ms(history_ttl_s), duration_ms(ledger_ttl_s)
        # Rows are taken now: the states may change once we yield to the loop.
        rows = [rows_of(state, now_ms, history_ttl_ms)
                for state in latest_per_customer(batch.states)]
        expires, ttl = now_ms + ledger_ttl_ms, ttl_seconds(ledger_ttl_ms)
        # Three round trips, each phase's writes concurrent. The states and the outbox
        # first, in any order between them: an event seen has its outputs stored.
        await self._all("write_batch", [
            *(partial(self._stamped_batch, prepared, r, now_ms) for r in rows),
            *(partial(self._outbox_write, prepared, key, blob, expires, ttl)
              for key, blob in (batch.outbox or {}).items())])
        # Only once every state is stored may its events count as seen.
        await self._all("write_batch (event ledger)",
                        self._ledger_batches(batch.events, now_ms, ledger_ttl_ms))
        # Counters after the ledger: a crash in between loses these counts, never
        # doubles them. Delivered outputs are deleted after the outbox is written.
        await _together(
            self.mark_published(batch.published) if batch.published else None,
            self.add_campaign_stats(batch.stats) if batch.stats else None,
            self.record_decisions(batch.decisions, now, history_ttl_s)
            if batch.decisions else None)

    def _outbox_write(self, prepared: Mapping[str, Any], key: EventKey, blob: bytes,
                      expires: int, ttl: int) -> Any:
        # The clock is read as the write is built, as for a customer's batch.
        return prepared["insert_outbox"].bind((*key, blob, expires, ttl, self._clock()))

    async def delete_customer(self, customer_id: str) -> None:
        _, prepared = self._ready("delete_customer")
        await self._execute("delete_customer",
                            lambda: (erasure_batch(prepared, customer_id, self._clock(),
                                                   self._legacy), None))

    async def customer_events(self, customer_id: str, now: datetime) -> list[str]:
        _, prepared = self._ready("customer_events")
        cutoff = to_ms(now)
        rows = await self._rows("customer_events", prepared["select_customer_ledger"],
                                (customer_id,))
        return sorted(eid for eid, expires in rows if (driver_ms(expires) or 0) > cutoff)

    async def forget(self, ref: str, requested_at: datetime) -> None:
        _, prepared = self._ready("forget")
        await self._rows("forget", prepared["insert_forgotten"], (ref, to_ms(requested_at)))

    async def forgotten(self) -> dict[str, datetime]:
        _, prepared = self._ready("forgotten")
        rows = await self._rows("forgotten", prepared["scan_forgotten"], ())
        return {ref: from_ms(driver_ms(at) or 0) for ref, at in rows}

    async def pseudonym_key(self) -> bytes:
        _, prepared = self._ready("pseudonym_key")
        # A lightweight transaction: the first writer's key wins for every worker.
        await self._rows("pseudonym_key", prepared["insert_store_meta"],
                         ("pseudonym_key", secrets.token_bytes(32)))
        rows = await self._rows("pseudonym_key", prepared["select_store_meta"],
                                ("pseudonym_key",))
        return bytes(rows[0][0])

    async def reset(self) -> None:
        _, prepared = self._ready("reset")
        # One table after the other: a truncation involves every node.
        for table in (STATE_TABLE, "event_ledger", "outbox", "visitor_sessions",
                      *VISITOR_TABLES):
            await self._rows("reset", prepared[f"truncate_{table}"], (), DDL_TIMEOUT_S)
        for table in self._legacy:  # or a later migrate would copy the customers back
            await self._rows("reset", prepared[f"legacy_truncate_{table}"], (), DDL_TIMEOUT_S)

    async def iter_customers(self, now: datetime, batch: int = 500
                             ) -> AsyncIterator[CustomerState]:
        session, prepared = self._ready("iter_customers")
        scan = prepared["scan_customers"].bind(())
        scan.fetch_size = max(1, batch)
        try:
            pages = _Pages(session.execute_async(scan))
            async for page in pages:
                ids = [row[0] for row in page]
                states = await self.load_customers(ids, now)
                for cid in ids:
                    if cid in states:
                        yield states[cid]
        except _DRIVER_ERRORS as exc:
            raise self._unavailable("iter_customers", exc) from exc

    # -- visitors' sessions ----------------------------------------------------------

    async def load_visitors(self, visitor_ids: Sequence[str], now: datetime
                            ) -> dict[str, bytes]:
        _, prepared = self._ready("load_visitors")
        ids = sorted(set(visitor_ids))
        cutoff = to_ms(now)
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), LEDGER_IN_CHUNK):
            rows = await self._rows("load_visitors", prepared["select_visitor_sessions"],
                                    (ids[start:start + LEDGER_IN_CHUNK],))
            found.update((row[0], bytes(row[1])) for row in rows
                         if (driver_ms(row[2]) or 0) > cutoff)
        return found

    async def save_visitors(self, states: Mapping[str, bytes], now: datetime,
                            ttl_s: float) -> None:
        _, prepared = self._ready("save_visitors")
        # The row lives ttl_s from now in the caller's time (expires_at) and on the
        # server's clock (the TTL, which removes it), as the ledger does.
        ttl_ms = duration_ms(ttl_s)
        expires, ttl = to_ms(now) + ttl_ms, ttl_seconds(ttl_ms)
        stamp = self._clock()
        statement = prepared["insert_visitor_sessions"]
        await self._all("save_visitors", [
            partial(statement.bind, (vid, blob, expires, ttl, stamp))
            for vid, blob in states.items()])

    async def delete_visitors(self, visitor_ids: Sequence[str]) -> None:
        _, prepared = self._ready("delete_visitors")
        stamp = self._clock()
        statement = prepared["delete_visitor_sessions"]
        await self._all("delete_visitors", [
            partial(statement.bind, (stamp, vid)) for vid in visitor_ids])

    # -- model snapshots -----------------------------------------------------------

    async def put_snapshot(
        self, model_id: str, version: int, blob: bytes, checksum: str, now: datetime
    ) -> None:
        _, prepared = self._ready("put_snapshot")
        values = (model_id, version, blob, checksum, to_ms(now))
        await self._rows("put_snapshot", prepared["insert_model_snapshots"],
                         (*values, self._clock()))

    async def latest_snapshot(self, model_id: str) -> Snapshot | None:
        _, prepared = self._ready("latest_snapshot")
        rows = await self._rows("latest_snapshot", prepared["select_model_snapshots"],
                                (model_id,))
        if not rows:
            return None
        found_id, version, payload, checksum, created_at = rows[0]
        return Snapshot(found_id, version, bytes(payload), checksum,
                        from_ms(driver_ms(created_at) or 0))

    async def purge_expired(self, now: datetime) -> int:
        """Nothing to do: Cassandra drops expired rows itself (TTL)."""
        return 0

    # -- decisions ----------------------------------------------------------------

    async def record_decisions(self, decisions: Sequence[StoredDecision], now: datetime,
                               ttl_s: float) -> None:
        _, prepared = self._ready("record_decisions")
        ttl_ms, now_ms = duration_ms(ttl_s), to_ms(now)
        stamp = self._clock()
        writes = []
        for d in decisions:
            decided = to_ms(d.decided_at)
            expires = decided + ttl_ms
            if expires > now_ms:
                writes.append(self._rows(
                    "record_decisions", prepared["insert_customer_decisions"],
                    (d.customer_id, decided, d.decision_id, d.payload, expires,
                     ttl_seconds(expires - now_ms), stamp)))
        await asyncio.gather(*writes)

    async def recent_decisions(self, customer_id: str, now: datetime, limit: int = 20
                               ) -> list[StoredDecision]:
        _, prepared = self._ready("recent_decisions")
        cutoff = to_ms(now)
        rows = await self._rows("recent_decisions", prepared["select_customer_decisions"],
                                (customer_id,))
        found = [StoredDecision(cid, from_ms(driver_ms(at) or 0), did, bytes(payload))
                 for cid, at, did, payload, expires in rows
                 if (driver_ms(expires) or 0) > cutoff]
        found.sort(key=lambda d: (-to_ms(d.decided_at), d.decision_id))
        return found[:limit]

    # -- campaigns ----------------------------------------------------------------

    async def add_campaign_stats(self, changes: Sequence[CampaignCounts]) -> None:
        _, prepared = self._ready("add_campaign_stats")
        # Counter updates are not idempotent: the retry policy never replays them
        # (WriteType.COUNTER), so a timeout may lose an increment, never doubles one.
        await asyncio.gather(*(
            self._rows("add_campaign_stats", prepared["update_campaign_stats"],
                       (*values, *key))
            for key, values in summed_stats(changes).items()))

    async def campaign_stats(self, campaign_id: str | None = None) -> list[CampaignCounts]:
        _, prepared = self._ready("campaign_stats")
        if campaign_id is None:
            rows = await self._rows("campaign_stats", prepared["scan_campaign_stats"], ())
        else:
            rows = await self._rows("campaign_stats", prepared["select_campaign_stats"],
                                    (campaign_id,))
        return sorted((counts_of(row) for row in rows),
                      key=lambda c: (c.campaign_id, c.variant, c.group))

    async def put_proposals(self, proposals: Sequence[StoredProposal]) -> None:
        _, prepared = self._ready("put_proposals")
        await asyncio.gather(*(
            self._rows("put_proposals", prepared["insert_proposals"], proposal_row(p))
            for p in proposals))

    async def proposal(self, proposal_id: str) -> StoredProposal | None:
        _, prepared = self._ready("proposal")
        rows = await self._rows("proposal", prepared["select_proposals"], (proposal_id,))
        return _proposal(rows[0]) if rows else None

    async def proposals(self, status: str | None = None, limit: int = 100
                        ) -> list[StoredProposal]:
        _, prepared = self._ready("proposals")
        rows = await self._rows("proposals", prepared["scan_proposals"], ())
        found = [_proposal(row) for row in rows]
        found = [p for p in found if status is None or p.status == status]
        found.sort(key=lambda p: (-to_ms(p.created_at), p.proposal_id))
        return found[:limit]

    async def resolve_proposal(self, proposal_id: str, status: str, at: datetime,
                               by: str | None, note: str | None = None) -> bool:
        _, prepared = self._ready("resolve_proposal")
        rows = await self._rows("resolve_proposal", prepared["resolve_proposals"],
                                (status, to_ms(at), by, note, proposal_id))
        return bool(rows and rows[0][0])


    # -- visitors ---------------------------------------------------------------------

    async def _visitor_rows(self, operation: str, visitor_ids: Sequence[str]
                            ) -> list[tuple[str, str | None, bytes, int]]:
        _, prepared = self._ready(operation)
        ids = list(dict.fromkeys(visitor_ids))
        pages = await asyncio.gather(*(
            self._rows(operation, prepared["select_visitors"], (ids[i:i + LEDGER_IN_CHUNK],))
            for i in range(0, len(ids), LEDGER_IN_CHUNK)))
        return [(vid, cid, bytes(blob), driver_ms(expires) or 0)
                for rows in pages for vid, cid, blob, expires in rows]

    async def load_visitor_profiles(self, visitor_ids: Sequence[str], now: datetime
                            ) -> dict[str, VisitorState]:
        cutoff = to_ms(now)
        return {vid: visitor_of(vid, blob)
                for vid, _, blob, expires in await self._visitor_rows("load_visitor_profiles",
                                                                       visitor_ids)
                if expires > cutoff}

    async def save_visitor_profiles(self, visitors: Sequence[tuple[VisitorState, datetime]],
                            now: datetime) -> None:
        _, prepared = self._ready("save_visitor_profiles")
        now_ms = to_ms(now)
        latest = {state.visitor_id: (state, expires_at) for state, expires_at in visitors}
        requests: list[Awaitable[list[Any]]] = []
        for vid, (state, expires_at) in latest.items():
            expires = to_ms(expires_at)
            cid = state.customer_id
            if state.is_empty() or expires <= now_ms:
                requests.append(self._rows("save_visitor_profiles", prepared["delete_visitors"],
                                           (self._clock(), vid)))
                if cid is not None:
                    requests.append(self._rows(
                        "save_visitor_profiles", prepared["delete_visitors_by_customer"],
                        (self._clock(), cid, vid)))
                continue
            ttl = ttl_seconds(expires - now_ms)
            requests.append(self._rows("save_visitor_profiles", prepared["insert_visitors"],
                                       (vid, cid, visitor_blob(state), expires, ttl,
                                        self._clock())))
            if cid is not None:
                requests.append(self._rows(
                    "save_visitor_profiles", prepared["insert_visitors_by_customer"],
                    (cid, vid, expires, ttl, self._clock())))
        await asyncio.gather(*requests)

    async def delete_visitor_profiles(self, visitor_ids: Sequence[str]) -> None:
        _, prepared = self._ready("delete_visitor_profiles")
        ids = list(dict.fromkeys(visitor_ids))
        linked = [(cid, vid) for vid, cid, _, _ in
                  await self._visitor_rows("delete_visitor_profiles", ids) if cid is not None]
        await asyncio.gather(
            *(self._rows("delete_visitor_profiles", prepared["delete_visitors_by_customer"],
                         (self._clock(), cid, vid)) for cid, vid in linked),
            *(self._rows("delete_visitor_profiles", prepared[statement], (self._clock(), vid))
              for vid in ids
              for statement in ("delete_visitors", "delete_event_ledger",
                                "delete_outbox_partition")))

    async def linked_visitors(self, customer_id: str, now: datetime) -> list[str]:
        _, prepared = self._ready("linked_visitors")
        cutoff = to_ms(now)
        rows = await self._rows("linked_visitors", prepared["select_visitors_by_customer"],
                                (customer_id,))
        return sorted(vid for vid, expires in rows if (driver_ms(expires) or 0) > cutoff)

def _copy_legacy(session: Any, keyspace: str, tables: Sequence[str]) -> int:
    """Copy every customer of the earlier layout's ``tables`` into ``customer_state``
    (blocking); the number of customers copied."""
    session.set_keyspace(keyspace)
    reads = {table: session.prepare(legacy_select(table)) for table in tables}
    prepared = {name: session.prepare(text) for name, text in STATEMENTS.items()
                if name.startswith("insert_") or name == "delete_customer_state"}
    scan = SimpleStatement(LEGACY_SCAN, fetch_size=COPY_PAGE)
    copied, ids = 0, []
    for row in session.execute(scan, timeout=DDL_TIMEOUT_S):
        ids.append(row[0])
        if len(ids) == COPY_PAGE:
            copied += _copy_customers(session, reads, prepared, ids)
            ids = []
    return copied + (_copy_customers(session, reads, prepared, ids) if ids else 0)


def _copy_customers(session: Any, reads: Mapping[str, Any], prepared: Mapping[str, Any],
                    ids: Sequence[str]) -> int:
    """Copy these customers: read each one's rows of every table, write one batch each."""
    lookups = [(cid, table) for cid in ids for table in reads]
    results = execute_concurrent(session, [(reads[table], (cid,)) for cid, table in lookups],
                                 concurrency=COPY_CONCURRENCY, raise_on_first_error=True)
    found: dict[str, dict[str, list[Any]]] = {cid: {} for cid in ids}
    for (cid, table), (_, rows) in zip(lookups, results, strict=True):
        found[cid][table] = list(rows)
    batches = [batch for cid in ids if (batch := copy_batch(prepared, cid, found[cid]))]
    execute_concurrent(session, [(batch, None) for batch in batches],
                       concurrency=COPY_CONCURRENCY, raise_on_first_error=True)
    return len(batches)


async def _together(*writes: Awaitable[None] | None) -> None:
    """Await the given writes concurrently, every one to its end; then raise the first error."""
    results = await asyncio.gather(*(w for w in writes if w is not None),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _replicas_missing(exc: NoHostAvailable) -> tuple[int, int] | None:
    """``(alive, required)`` replicas when every host tried answered "unavailable".

    The retry policy tries the next host on an unavailable answer, so the
    driver reports it wrapped in :class:`NoHostAvailable`.
    """
    errors = list((exc.errors or {}).values()) if isinstance(exc.errors, dict) else []
    if not errors or not all(isinstance(e, UnavailableErrorMessage | Unavailable)
                             for e in errors):
        return None
    first = errors[0]
    if isinstance(first, Unavailable):
        return first.alive_replicas, first.required_replicas
    info = first.info or {}
    return int(info.get("alive_replicas", 0)), int(info.get("required_replicas", 0))


def _proposal(row: Sequence[Any]) -> StoredProposal:
    """A driver row of ``proposals`` (naive UTC datetimes) as a stored proposal."""
    values = list(row)
    for index in (3, 4, 7):
        values[index] = driver_ms(values[index])
    return proposal_of(values)
