"""The embedded store: one SQLite file in the working directory, zero set-up.

It mirrors the Cassandra semantics the production store will have: upserts
(``INSERT OR REPLACE``), TTLs (an ``expires_at`` column that reads ignore and
:meth:`EmbeddedStore.purge_expired` deletes) and one partition per customer
(the partition key leads every primary key).  SQLite calls block, so they run
on one dedicated thread: SQLite connections must stay on the thread that made
them, and one writer is all SQLite allows anyway.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from streams.errors import StoreUnavailable
from streams.store import EventKey

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_ledger (
    partition_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (partition_key, event_id)
) WITHOUT ROWID;
"""
_CHUNK = 400  # keeps the number of bound parameters well below SQLite's limit


class EmbeddedStore:
    """The :class:`streams.store.Store` protocol on a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relevanz-store")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StoreUnavailable(f"embedded store {self.path} is not open")
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"embedded store {self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def connect() -> None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"cannot open embedded store {self.path}: {exc}") from exc
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    async def seen_events(self, keys: Sequence[EventKey], now: datetime) -> set[EventKey]:
        cutoff = now.timestamp()

        def query(db: sqlite3.Connection) -> set[EventKey]:
            found: set[EventKey] = set()
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                rows = ",".join("(?,?)" for _ in chunk)
                params = [part for key in chunk for part in key]
                found.update(
                    (pk, eid)
                    for pk, eid in db.execute(
                        "SELECT partition_key, event_id FROM event_ledger "  # noqa: S608 - only placeholders are interpolated
                        f"WHERE (partition_key, event_id) IN (VALUES {rows}) AND expires_at > ?",
                        [*params, cutoff],
                    )
                )
            return found

        return await self._run(query) if keys else set()

    async def record_events(
        self, keys: Sequence[EventKey], now: datetime, ttl_s: float
    ) -> None:
        expires = now.timestamp() + ttl_s

        def upsert(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT OR REPLACE INTO event_ledger VALUES (?, ?, ?)",
                    [(pk, eid, expires) for pk, eid in keys],
                )

        if keys:
            await self._run(upsert)

    async def purge_expired(self, now: datetime) -> int:
        """Delete rows whose TTL has passed; returns how many."""

        def purge(db: sqlite3.Connection) -> int:
            with db:
                return db.execute(
                    "DELETE FROM event_ledger WHERE expires_at <= ?", (now.timestamp(),)
                ).rowcount

        return await self._run(purge)
