"""The embedded store: one SQLite file in the working directory, zero set-up.

It mirrors the Cassandra schema (``schemas/cassandra.cql``) table for table and
column for column (except that Cassandra's ``customer_state`` is six tables
here, one per part, with the same columns), and its semantics: replace-on-save, TTLs (an
``expires_at`` column in milliseconds that reads compare with their ``now``
and :meth:`EmbeddedStore.purge_expired` deletes) and one partition per
customer (the partition key leads every primary key, ``WITHOUT ROWID`` keeps
rows clustered by it).  Times are whole milliseconds since the epoch, as in
Cassandra.  SQLite calls block, so they run on one dedicated thread: SQLite
connections must stay on the thread that made them, and one writer is all
SQLite allows anyway.  Each public call is one round trip to that thread and
at most one transaction.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from agents.core.customer import CustomerState
from agents.core.visitors import VisitorState
from streams.errors import ConfigError, StoreUnavailable
from streams.store.codec import (
    CONSENT_COLUMNS,
    CUSTOMER_COLUMNS,
    CUSTOMER_TABLES,
    INTERACTION_COLUMNS,
    INTEREST_COLUMNS,
    PENDING_COLUMNS,
    PRIMARY_KEYS,
    TAG_COLUMNS,
    CustomerRows,
    HistoryDelta,
    counts_of,
    duration_ms,
    from_ms,
    latest_per_customer,
    proposal_of,
    proposal_row,
    rows_of,
    rows_with_history_delta,
    state_of,
    summed_stats,
    to_ms,
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

T = TypeVar("T")

#: ``PRAGMA user_version`` of the schema below; 0 is the ledger-only schema
#: (expiry in float seconds) of the first release.
SCHEMA_VERSION = 7
_TABLES = (
    """CREATE TABLE IF NOT EXISTS customers (
        customer_id TEXT NOT NULL PRIMARY KEY,
        locale TEXT, language TEXT, time_zone TEXT, master_updated_at INTEGER,
        country TEXT, birth_year INTEGER, gender TEXT,
        attributes TEXT,  -- JSON object; NULL when empty
        orders INTEGER NOT NULL, revenue REAL NOT NULL,
        first_purchase_at INTEGER, last_purchase_at INTEGER, last_event_at INTEGER,
        predictions BLOB,  -- msgpack (streams.store.codec.predictions_blob); NULL when none
        parked BLOB  -- msgpack (streams.store.codec.parked_blob); NULL when none
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS customer_consent (
        customer_id TEXT NOT NULL, purpose TEXT NOT NULL,
        granted INTEGER NOT NULL, decided_at INTEGER NOT NULL,
        source TEXT NOT NULL, legal_basis TEXT NOT NULL,
        earlier BLOB,  -- msgpack (streams.store.codec.earlier_blob); NULL when none
        PRIMARY KEY (customer_id, purpose)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS customer_interests (
        customer_id TEXT NOT NULL, topic TEXT NOT NULL,
        score REAL NOT NULL, scored_at INTEGER NOT NULL,
        recent TEXT NOT NULL,  -- JSON list of ms
        PRIMARY KEY (customer_id, topic)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS customer_tags (
        customer_id TEXT NOT NULL, tag TEXT NOT NULL,
        topic TEXT NOT NULL, assigned_at INTEGER NOT NULL, caused_by TEXT NOT NULL,
        PRIMARY KEY (customer_id, tag)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS interactions (
        customer_id TEXT NOT NULL, occurred_at INTEGER NOT NULL, event_id TEXT NOT NULL,
        kind TEXT NOT NULL, content_id TEXT, campaign_id TEXT, amount REAL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (customer_id, occurred_at, event_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS customer_pending_sends (
        customer_id TEXT NOT NULL, trigger_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
        channel TEXT NOT NULL, send_at INTEGER NOT NULL, campaign_id TEXT NOT NULL,
        content_id TEXT NOT NULL,
        PRIMARY KEY (customer_id, trigger_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS forgotten (
        ref TEXT NOT NULL PRIMARY KEY, requested_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS store_meta (
        meta_key TEXT NOT NULL PRIMARY KEY, meta_value BLOB NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS event_ledger (
        partition_key TEXT NOT NULL, event_id TEXT NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (partition_key, event_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS outbox (
        partition_key TEXT NOT NULL, event_id TEXT NOT NULL,
        outputs BLOB NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (partition_key, event_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS customer_decisions (
        customer_id TEXT NOT NULL, decided_at INTEGER NOT NULL, decision_id TEXT NOT NULL,
        payload BLOB NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (customer_id, decided_at, decision_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS campaign_stats (
        campaign_id TEXT NOT NULL, variant TEXT NOT NULL, cohort TEXT NOT NULL,
        sends INTEGER NOT NULL, clicks INTEGER NOT NULL, conversions INTEGER NOT NULL,
        revenue_cents INTEGER NOT NULL, revenue_sq_cents INTEGER NOT NULL,
        PRIMARY KEY (campaign_id, variant, cohort)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS proposals (
        proposal_id TEXT NOT NULL PRIMARY KEY, customer_id TEXT NOT NULL,
        campaign_id TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
        status TEXT NOT NULL, payload BLOB NOT NULL, resolved_at INTEGER, resolved_by TEXT,
        note TEXT
    ) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS proposals_by_status ON proposals (status, created_at)""",
    """CREATE TABLE IF NOT EXISTS visitors (
        visitor_id TEXT NOT NULL PRIMARY KEY, customer_id TEXT,
        state BLOB NOT NULL,  -- msgpack (streams.store.visitor_rows.visitor_blob)
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS visitors_by_customer (
        customer_id TEXT NOT NULL, visitor_id TEXT NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (customer_id, visitor_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS visitor_sessions (
        visitor_id TEXT NOT NULL PRIMARY KEY, payload BLOB NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS model_snapshots (
        model_id TEXT NOT NULL, version INTEGER NOT NULL, payload BLOB NOT NULL,
        checksum TEXT NOT NULL, created_at INTEGER NOT NULL,
        PRIMARY KEY (model_id, version)
    ) WITHOUT ROWID""",
)
_CHUNK = 400  # ids per IN list: well below SQLite's bound-parameter limit (999 before 3.32)


def _insert(table: str, columns: tuple[str, ...], verb: str = "INSERT") -> str:
    marks = ", ".join("?" * len(columns))
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def _select(table: str, n: int, extra: str = "") -> str:
    """Rows of ``n`` customers of one table, in primary key order, as Cassandra gives them."""
    marks = ", ".join("?" * n)
    return (f"SELECT {', '.join(CUSTOMER_TABLES[table])} FROM {table} "  # noqa: S608 - names are constants
            f"WHERE customer_id IN ({marks}){extra} ORDER BY {', '.join(PRIMARY_KEYS[table])}")


_INSERT_CUSTOMER = _insert("customers", CUSTOMER_COLUMNS, "INSERT OR REPLACE")
_INSERT_CHILD = {
    "customer_consent": _insert("customer_consent", CONSENT_COLUMNS),
    "customer_interests": _insert("customer_interests", INTEREST_COLUMNS),
    "customer_tags": _insert("customer_tags", TAG_COLUMNS),
    "interactions": _insert("interactions", INTERACTION_COLUMNS),
    "customer_pending_sends": _insert("customer_pending_sends", PENDING_COLUMNS),
}
_INSERT_LEDGER = "INSERT OR REPLACE INTO event_ledger VALUES (?, ?, ?)"
_INSERT_OUTBOX = "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)"
_DELETE_OUTBOX = "DELETE FROM outbox WHERE partition_key = ? AND event_id = ?"
_DELETE_INTERACTION = ("DELETE FROM interactions "
                       "WHERE customer_id = ? AND occurred_at = ? AND event_id = ?")
_UPSERT_INTERACTION = _insert("interactions", INTERACTION_COLUMNS, "INSERT OR REPLACE")


def _sql_customer(row: tuple[Any, ...]) -> tuple[Any, ...]:
    attributes = row[8]
    return (*row[:8], json.dumps(attributes) if attributes else None, *row[9:])


def _sql_interest(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*row[:4], json.dumps(row[4]))


_ADD_STATS = ("INSERT INTO campaign_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
              "ON CONFLICT (campaign_id, variant, cohort) DO UPDATE SET "
              "sends = sends + excluded.sends, clicks = clicks + excluded.clicks, "
              "conversions = conversions + excluded.conversions, "
              "revenue_cents = revenue_cents + excluded.revenue_cents, "
              "revenue_sq_cents = revenue_sq_cents + excluded.revenue_sq_cents")
_INSERT_DECISION = "INSERT OR REPLACE INTO customer_decisions VALUES (?, ?, ?, ?, ?)"


def _stat_rows(changes: Sequence[CampaignCounts]) -> list[tuple[Any, ...]]:
    return [(*key, *values) for key, values in summed_stats(changes).items()]


def _decision_rows(decisions: Sequence[StoredDecision], now_ms: int, ttl_ms: int
                   ) -> list[tuple[Any, ...]]:
    """Rows of the decisions still unexpired at ``now_ms`` with ``ttl_ms``."""
    rows = [(d.customer_id, to_ms(d.decided_at), d.decision_id, d.payload,
             to_ms(d.decided_at) + ttl_ms) for d in decisions]
    return [row for row in rows if row[4] > now_ms]


class EmbeddedStore:
    """The :class:`streams.store.Store` protocol on a SQLite file."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        #: False for a reader that must not mistake a missing file for an empty store.
        self.create = create
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # -- plumbing -----------------------------------------------------------

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="relevanz-store")
        return self._executor

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread(), fn)

    async def _run(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StoreUnavailable(f"embedded store {self.path} is not open ({operation})")
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(
                    f"embedded store {self.path}: {operation} failed: {exc}") from exc

        return await self._call(call)

    def _connect(self) -> sqlite3.Connection:
        if not self.create and not self.path.is_file():
            # An access request answered from a fresh empty file would say "nothing is
            # held" when the store is elsewhere (a typo, another working directory).
            raise ConfigError(f"RELEVANZ_STORE_URL: the embedded store {self.path.absolute()} "
                              "does not exist; name the store the workers write to")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            _migrate(db, self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open embedded store {self.path}: {exc}") from exc
        return db

    # -- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        def connect() -> None:
            if self._db is None:
                self._db = self._connect()

        await self._call(connect)

    async def close(self) -> None:
        if self._executor is None:
            return

        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def migrate(self) -> None:
        """Create the tables, or upgrade an older file; opening does the same."""

        def run() -> None:
            if self._db is not None:
                _migrate(self._db, self.path)
            else:
                self._connect().close()

        await self._call(run)

    # -- event ledger -----------------------------------------------------------

    async def seen_events(self, keys: Sequence[EventKey], now: datetime) -> set[EventKey]:
        cutoff = to_ms(now)

        def query(db: sqlite3.Connection) -> set[EventKey]:
            return {(pk, eid) for pk, eid in _keyed(db, "event_ledger", "", keys, cutoff)}

        return await self._run("seen_events", query) if keys else set()

    async def record_events(
        self, keys: Sequence[EventKey], now: datetime, ttl_s: float
    ) -> None:
        expires = to_ms(now) + duration_ms(ttl_s)

        def upsert(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany(_INSERT_LEDGER, [(pk, eid, expires) for pk, eid in keys])

        if keys:
            await self._run("record_events", upsert)

    # -- outbox -------------------------------------------------------------------

    async def unpublished(self, keys: Sequence[EventKey], now: datetime
                          ) -> dict[EventKey, bytes]:
        cutoff = to_ms(now)

        def query(db: sqlite3.Connection) -> dict[EventKey, bytes]:
            return {(pk, eid): bytes(outputs)
                    for pk, eid, outputs in _keyed(db, "outbox", ", e.outputs", keys, cutoff)}

        return await self._run("unpublished", query) if keys else {}

    async def mark_published(self, keys: Sequence[EventKey]) -> None:
        rows = list(keys)

        def delete(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(_DELETE_OUTBOX, rows)

        if rows:
            await self._run("mark_published", delete)

    # -- customers ----------------------------------------------------------------

    async def load_customers(
        self, customer_ids: Sequence[str], now: datetime
    ) -> dict[str, CustomerState]:
        ids = list(dict.fromkeys(customer_ids))
        cutoff = to_ms(now)

        def query(db: sqlite3.Connection) -> dict[str, CustomerState]:
            found: dict[str, CustomerState] = {}
            for start in range(0, len(ids), _CHUNK):
                found.update(_load_chunk(db, ids[start:start + _CHUNK], cutoff))
            return found

        return await self._run("load_customers", query) if ids else {}

    async def write_batch(self, batch: BatchWrite, now: datetime, ledger_ttl_s: float,
                          history_ttl_s: float) -> None:
        now_ms = to_ms(now)
        history_ttl_ms = duration_ms(history_ttl_s)
        # Rows are taken here, on the caller's side: the states may change once we return.
        full: list[CustomerRows] = []
        deltas: list[tuple[CustomerRows, HistoryDelta]] = []
        previous = batch.previous
        for state in latest_per_customer(batch.states):
            before = previous.get(state.customer_id) if previous else None
            if before is None:
                full.append(rows_of(state, now_ms, history_ttl_ms))
            else:
                deltas.append(rows_with_history_delta(before, state, now_ms, history_ttl_ms))
        expires = now_ms + duration_ms(ledger_ttl_s)
        ledger = [(pk, eid, expires) for pk, eid in batch.events]
        outputs = [(pk, eid, blob, expires) for (pk, eid), blob in (batch.outbox or {}).items()]
        delivered = list(batch.published)
        counters = _stat_rows(batch.stats)
        kept = _decision_rows(batch.decisions, now_ms, history_ttl_ms)

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                _replace_customers(db, full)
                _update_customers(db, deltas)
                db.executemany(_INSERT_OUTBOX, outputs)
                db.executemany(_INSERT_LEDGER, ledger)
                db.executemany(_DELETE_OUTBOX, delivered)
                db.executemany(_ADD_STATS, counters)
                db.executemany(_INSERT_DECISION, kept)

        if full or deltas or ledger or outputs or delivered or counters or kept:
            await self._run("write_batch", write)

    async def delete_customer(self, customer_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                for table in CUSTOMER_TABLES:
                    db.execute(f"DELETE FROM {table} WHERE customer_id = ?",  # noqa: S608 - constant names
                               (customer_id,))
                db.execute("DELETE FROM event_ledger WHERE partition_key = ?", (customer_id,))
                db.execute("DELETE FROM customer_decisions WHERE customer_id = ?",
                           (customer_id,))

        await self._run("delete_customer", delete)

    async def customer_events(self, customer_id: str, now: datetime) -> list[str]:
        cutoff = to_ms(now)

        def query(db: sqlite3.Connection) -> list[str]:
            return [eid for (eid,) in db.execute(
                "SELECT event_id FROM event_ledger WHERE partition_key = ? AND expires_at > ? "
                "ORDER BY event_id", (customer_id, cutoff))]

        return await self._run("customer_events", query)

    async def forget(self, ref: str, requested_at: datetime) -> None:
        row = (ref, to_ms(requested_at))

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO forgotten VALUES (?, ?)", row)

        await self._run("forget", write)

    async def forgotten(self) -> dict[str, datetime]:
        def query(db: sqlite3.Connection) -> dict[str, datetime]:
            return {ref: from_ms(at) for ref, at in db.execute(
                "SELECT ref, requested_at FROM forgotten")}

        return await self._run("forgotten", query)

    async def pseudonym_key(self) -> bytes:
        candidate = secrets.token_bytes(32)

        def get_or_make(db: sqlite3.Connection) -> bytes:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR IGNORE INTO store_meta VALUES ('pseudonym_key', ?)",
                           (candidate,))
                (value,) = db.execute(
                    "SELECT meta_value FROM store_meta WHERE meta_key = 'pseudonym_key'").fetchone()
            return bytes(value)

        return await self._run("pseudonym_key", get_or_make)

    async def reset(self) -> None:
        def clear(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                for table in (*CUSTOMER_TABLES, "event_ledger", "outbox", "visitor_sessions",
                              *VISITOR_TABLES):
                    db.execute(f"DELETE FROM {table}")  # noqa: S608 - constant names

        await self._run("reset", clear)

    async def iter_customers(self, now: datetime, batch: int = 500
                             ) -> AsyncIterator[CustomerState]:
        after = ""
        size = max(1, min(batch, _CHUNK))
        cutoff = to_ms(now)
        while True:
            def page(db: sqlite3.Connection, after: str = after
                     ) -> tuple[list[str], dict[str, CustomerState]]:
                ids = [cid for (cid,) in db.execute(
                    "SELECT customer_id FROM customers WHERE customer_id > ? "
                    "ORDER BY customer_id LIMIT ?", (after, size))]
                return ids, _load_chunk(db, ids, cutoff) if ids else {}

            ids, loaded = await self._run("iter_customers", page)
            for cid in ids:
                yield loaded[cid]
            if len(ids) < size:
                return
            after = ids[-1]

    # -- visitors' sessions --------------------------------------------------------

    async def load_visitors(self, visitor_ids: Sequence[str], now: datetime
                            ) -> dict[str, bytes]:
        ids = sorted(set(visitor_ids))
        cutoff = to_ms(now)

        def query(db: sqlite3.Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                for vid, payload in db.execute(
                        "SELECT visitor_id, payload FROM visitor_sessions "  # noqa: S608 - marks only
                        f"WHERE visitor_id IN ({marks}) AND expires_at > ?", (*chunk, cutoff)):
                    found[vid] = bytes(payload)
            return found

        return await self._run("load_visitors", query) if ids else {}

    async def save_visitors(self, states: Mapping[str, bytes], now: datetime,
                            ttl_s: float) -> None:
        expires = to_ms(now) + int(ttl_s * 1000)
        rows = [(vid, blob, expires) for vid, blob in states.items()]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO visitor_sessions VALUES (?, ?, ?)", rows)

        if rows:
            await self._run("save_visitors", write)

    async def delete_visitors(self, visitor_ids: Sequence[str]) -> None:
        rows = [(vid,) for vid in visitor_ids]

        def delete(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany("DELETE FROM visitor_sessions WHERE visitor_id = ?", rows)

        if rows:
            await self._run("delete_visitors", delete)

    # -- model snapshots --------------------------------------------------------

    async def put_snapshot(
        self, model_id: str, version: int, blob: bytes, checksum: str, now: datetime
    ) -> None:
        row = (model_id, version, blob, checksum, to_ms(now))

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO model_snapshots VALUES (?, ?, ?, ?, ?)", row)

        await self._run("put_snapshot", write)

    async def latest_snapshot(self, model_id: str) -> Snapshot | None:
        def query(db: sqlite3.Connection) -> Snapshot | None:
            row = db.execute(
                "SELECT model_id, version, payload, checksum, created_at FROM model_snapshots "
                "WHERE model_id = ? ORDER BY version DESC LIMIT 1", (model_id,)).fetchone()
            if row is None:
                return None
            return Snapshot(row[0], row[1], bytes(row[2]), row[3], from_ms(row[4]))

        return await self._run("latest_snapshot", query)

    # -- decisions ----------------------------------------------------------------

    async def record_decisions(self, decisions: Sequence[StoredDecision], now: datetime,
                               ttl_s: float) -> None:
        rows = _decision_rows(decisions, to_ms(now), duration_ms(ttl_s))
        if not rows:
            return

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(_INSERT_DECISION, rows)

        await self._run("record_decisions", write)

    async def recent_decisions(self, customer_id: str, now: datetime, limit: int = 20
                               ) -> list[StoredDecision]:
        cutoff = to_ms(now)

        def query(db: sqlite3.Connection) -> list[StoredDecision]:
            return [StoredDecision(cid, from_ms(at), did, bytes(payload))
                    for cid, at, did, payload in db.execute(
                        "SELECT customer_id, decided_at, decision_id, payload "
                        "FROM customer_decisions WHERE customer_id = ? AND expires_at > ? "
                        "ORDER BY decided_at DESC, decision_id LIMIT ?",
                        (customer_id, cutoff, limit))]

        return await self._run("recent_decisions", query)

    # -- campaigns ----------------------------------------------------------------

    async def add_campaign_stats(self, changes: Sequence[CampaignCounts]) -> None:
        rows = _stat_rows(changes)
        if not rows:
            return

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(_ADD_STATS, rows)

        await self._run("add_campaign_stats", write)

    async def campaign_stats(self, campaign_id: str | None = None) -> list[CampaignCounts]:
        def query(db: sqlite3.Connection) -> list[CampaignCounts]:
            sql = "SELECT * FROM campaign_stats"
            rows = (db.execute(sql + " WHERE campaign_id = ? ORDER BY 1, 2, 3", (campaign_id,))
                    if campaign_id is not None else db.execute(sql + " ORDER BY 1, 2, 3"))
            return [counts_of(row) for row in rows]

        return await self._run("campaign_stats", query)

    async def put_proposals(self, proposals: Sequence[StoredProposal]) -> None:
        rows = [proposal_row(p) for p in proposals]
        if not rows:
            return

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT OR IGNORE INTO proposals VALUES "
                               "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

        await self._run("put_proposals", write)

    async def proposal(self, proposal_id: str) -> StoredProposal | None:
        def query(db: sqlite3.Connection) -> StoredProposal | None:
            row = db.execute("SELECT * FROM proposals WHERE proposal_id = ?",
                             (proposal_id,)).fetchone()
            return None if row is None else proposal_of(row)

        return await self._run("proposal", query)

    async def proposals(self, status: str | None = None, limit: int = 100
                        ) -> list[StoredProposal]:
        def query(db: sqlite3.Connection) -> list[StoredProposal]:
            if status is None:
                rows = db.execute("SELECT * FROM proposals ORDER BY created_at DESC, "
                                  "proposal_id LIMIT ?", (limit,))
            else:
                rows = db.execute("SELECT * FROM proposals WHERE status = ? ORDER BY "
                                  "created_at DESC, proposal_id LIMIT ?", (status, limit))
            return [proposal_of(row) for row in rows]

        return await self._run("proposals", query)

    async def resolve_proposal(self, proposal_id: str, status: str, at: datetime,
                               by: str | None, note: str | None = None) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            with db:
                return db.execute(
                    "UPDATE proposals SET status = ?, resolved_at = ?, resolved_by = ?, "
                    "note = ? WHERE proposal_id = ? AND status = 'proposed'",
                    (status, to_ms(at), by, note, proposal_id)).rowcount == 1

        return await self._run("resolve_proposal", write)

    # -- housekeeping -----------------------------------------------------------

    async def purge_expired(self, now: datetime) -> int:
        """Delete rows whose TTL has passed; returns how many."""
        cutoff = to_ms(now)

        def purge(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN")
                return sum(
                    db.execute(f"DELETE FROM {table} WHERE expires_at <= ?",  # noqa: S608 - constant names
                               (cutoff,)).rowcount
                    for table in ("event_ledger", "outbox", "interactions",
                                  "customer_decisions", "visitor_sessions",
                                  *VISITOR_TABLES))

        return await self._run("purge_expired", purge)


    async def load_visitor_profiles(self, visitor_ids: Sequence[str], now: datetime
                            ) -> dict[str, VisitorState]:
        ids = list(dict.fromkeys(visitor_ids))
        cutoff = to_ms(now)

        def query(db: sqlite3.Connection) -> dict[str, VisitorState]:
            found: dict[str, VisitorState] = {}
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                for vid, blob in db.execute(
                        f"SELECT visitor_id, state FROM visitors WHERE visitor_id IN ({marks}) "  # noqa: S608 - only placeholders
                        "AND expires_at > ?", (*chunk, cutoff)):
                    found[vid] = visitor_of(vid, bytes(blob))
            return found

        return await self._run("load_visitor_profiles", query) if ids else {}

    async def save_visitor_profiles(self, visitors: Sequence[tuple[VisitorState, datetime]],
                            now: datetime) -> None:
        cutoff = to_ms(now)
        rows: dict[str, tuple[str, str | None, bytes, int] | None] = {}
        for state, expires_at in visitors:  # rows taken now: the states may change later
            expires = to_ms(expires_at)
            keep = not state.is_empty() and expires > cutoff
            rows[state.visitor_id] = ((state.visitor_id, state.customer_id,
                                       visitor_blob(state), expires) if keep else None)
        gone = [(vid,) for vid, row in rows.items() if row is None]
        kept = [row for row in rows.values() if row is not None]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                _delete_visitor_rows(db, [vid for (vid,) in gone])
                db.executemany("INSERT OR REPLACE INTO visitors VALUES (?, ?, ?, ?)", kept)
                db.executemany("INSERT OR REPLACE INTO visitors_by_customer VALUES (?, ?, ?)",
                               [(cid, vid, expires) for vid, cid, _, expires in kept
                                if cid is not None])

        if rows:
            await self._run("save_visitor_profiles", write)

    async def delete_visitor_profiles(self, visitor_ids: Sequence[str]) -> None:
        ids = [(vid,) for vid in dict.fromkeys(visitor_ids)]

        def delete(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                _delete_visitor_rows(db, [vid for (vid,) in ids])
                db.executemany("DELETE FROM event_ledger WHERE partition_key = ?", ids)
                db.executemany("DELETE FROM outbox WHERE partition_key = ?", ids)

        if ids:
            await self._run("delete_visitor_profiles", delete)

    async def linked_visitors(self, customer_id: str, now: datetime) -> list[str]:
        cutoff = to_ms(now)

        def query(db: sqlite3.Connection) -> list[str]:
            return [vid for (vid,) in db.execute(
                "SELECT visitor_id FROM visitors_by_customer WHERE customer_id = ? "
                "AND expires_at > ? ORDER BY visitor_id", (customer_id, cutoff))]

        return await self._run("linked_visitors", query)

def _delete_visitor_rows(db: sqlite3.Connection, visitor_ids: list[str]) -> None:
    """Delete the visitors' rows and their entries under the customer they were linked to."""
    ids = [(vid,) for vid in visitor_ids]
    db.executemany("DELETE FROM visitors_by_customer WHERE customer_id IN (SELECT customer_id "
                   "FROM visitors WHERE visitor_id = ?1) AND visitor_id = ?1", ids)
    db.executemany("DELETE FROM visitors WHERE visitor_id = ?", ids)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file to :data:`SCHEMA_VERSION` in one transaction (a no-op when it is)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"embedded store {path} has schema version {version}, newer than this Relevanz "
            f"understands ({SCHEMA_VERSION}); upgrade Relevanz or use another file")
    with db:
        db.execute("BEGIN IMMEDIATE")
        # Another process (a second worker on the same file) may have migrated
        # while this one waited for the write lock.
        if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        # Versions 1 to 3 and 5 lack tables, which CREATE ... IF NOT EXISTS adds, and
        # version 2 the predictions column.
        old_ledger = version == 0 and db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'event_ledger'"
        ).fetchone() is not None
        if old_ledger:  # version 0: expiry in float seconds
            db.execute("ALTER TABLE event_ledger RENAME TO event_ledger_v0")
        for statement in _TABLES:
            db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(customers)")}
        if "predictions" not in columns:  # versions before 3
            db.execute("ALTER TABLE customers ADD COLUMN predictions BLOB")
        if "parked" not in columns:  # versions before 5
            db.execute("ALTER TABLE customers ADD COLUMN parked BLOB")
        consent = {row[1] for row in db.execute("PRAGMA table_info(customer_consent)")}
        if "earlier" not in consent:  # versions before 5
            db.execute("ALTER TABLE customer_consent ADD COLUMN earlier BLOB")
        if old_ledger:
            db.execute("INSERT INTO event_ledger SELECT partition_key, event_id, "
                       "CAST(expires_at * 1000 AS INTEGER) FROM event_ledger_v0")
            db.execute("DROP TABLE event_ledger_v0")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _replace_customers(db: sqlite3.Connection, rows: list[CustomerRows]) -> None:
    """Write ``rows`` so that each customer's stored rows are exactly these.

    Delete and insert again, as Cassandra does.  (Writing only the difference
    to the stored history was measured: reading and comparing the stored rows
    costs as much as rewriting them.)
    """
    ids = [(r.customer[0],) for r in rows]
    for table in _INSERT_CHILD:
        db.executemany(f"DELETE FROM {table} WHERE customer_id = ?", ids)  # noqa: S608 - constant names
    db.executemany(_INSERT_CUSTOMER, [_sql_customer(r.customer) for r in rows])
    db.executemany(_INSERT_CHILD["customer_consent"], [c for r in rows for c in r.consent])
    db.executemany(_INSERT_CHILD["customer_interests"],
                   [_sql_interest(i) for r in rows for i in r.interests])
    db.executemany(_INSERT_CHILD["customer_tags"], [t for r in rows for t in r.tags])
    db.executemany(_INSERT_CHILD["interactions"], [h for r in rows for h in r.history])
    db.executemany(_INSERT_CHILD["customer_pending_sends"],
                   [p for r in rows for p in r.pending])


def _update_customers(db: sqlite3.Connection,
                      deltas: list[tuple[CustomerRows, HistoryDelta]]) -> None:
    """Like :func:`_replace_customers`, but the history only by its difference."""
    if not deltas:
        return
    ids = [(r.customer[0],) for r, _ in deltas]
    for table in _INSERT_CHILD:
        if table != "interactions":
            db.executemany(f"DELETE FROM {table} WHERE customer_id = ?", ids)  # noqa: S608 - constant names
    db.executemany(_INSERT_CUSTOMER, [_sql_customer(r.customer) for r, _ in deltas])
    db.executemany(_INSERT_CHILD["customer_consent"], [c for r, _ in deltas for c in r.consent])
    db.executemany(_INSERT_CHILD["customer_interests"],
                   [_sql_interest(i) for r, _ in deltas for i in r.interests])
    db.executemany(_INSERT_CHILD["customer_tags"], [t for r, _ in deltas for t in r.tags])
    db.executemany(_INSERT_CHILD["customer_pending_sends"],
                   [p for r, _ in deltas for p in r.pending])
    db.executemany(_DELETE_INTERACTION, [k for _, d in deltas for k in d.removed])
    db.executemany(_UPSERT_INTERACTION, [h for _, d in deltas for h in d.added])


def _keyed(db: sqlite3.Connection, table: str, columns: str, keys: Sequence[EventKey],
           cutoff: int) -> list[tuple[Any, ...]]:
    """``(partition_key, event_id{columns})`` of the rows of ``table`` (the ledger or
    the outbox) stored under ``keys`` and unexpired at ``cutoff``."""
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        rows = ",".join("(?,?)" for _ in chunk)
        params = [part for key in chunk for part in key]
        # The batch's keys drive the loop and each is a primary-key search;
        # "(partition_key, event_id) IN (VALUES ...)" made SQLite scan the
        # whole ledger once per batch (cost growing with the ledger).
        # CROSS JOIN keeps that order fixed.
        found += db.execute(
            f"WITH batch(pk, eid) AS (VALUES {rows}) "  # noqa: S608 - constants and placeholders
            f"SELECT e.partition_key, e.event_id{columns} FROM batch CROSS JOIN {table} AS e "
            "ON e.partition_key = batch.pk AND e.event_id = batch.eid "
            "WHERE e.expires_at > ?",
            [*params, cutoff],
        )
    return found


def _load_chunk(db: sqlite3.Connection, ids: list[str], cutoff: int
                ) -> dict[str, CustomerState]:
    """The states of up to :data:`_CHUNK` customers in five queries."""
    n = len(ids)
    customers = db.execute(_select("customers", n), ids).fetchall()
    if not customers:
        return {}
    children: dict[str, dict[str, list[Any]]] = {}
    for table in CUSTOMER_TABLES:
        if table == "customers":
            continue
        extra, params = (" AND expires_at > ?", [*ids, cutoff]) if table == "interactions" \
            else ("", ids)
        grouped: dict[str, list[Any]] = {}
        for row in db.execute(_select(table, n, extra), params):
            grouped.setdefault(row[0], []).append(row)
        children[table] = grouped
    found = {}
    for row in customers:
        cid = row[0]
        attributes = json.loads(row[8]) if row[8] else {}
        found[cid] = state_of(
            (*row[:8], attributes, *row[9:]),
            children["customer_consent"].get(cid, ()),
            [(*i[:4], json.loads(i[4])) for i in children["customer_interests"].get(cid, ())],
            children["customer_tags"].get(cid, ()),
            children["interactions"].get(cid, ()),
            children["customer_pending_sends"].get(cid, ()),
        )
    return found
