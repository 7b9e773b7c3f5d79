"""What only the embedded store does: its file's schema versions and physical purging.

Everything the two stores share is in ``test_store_contract.py``.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.core.customer import CustomerPredictions, CustomerState, Interaction
from streams.errors import StoreUnavailable
from streams.store import BatchWrite
from streams.store.embedded import SCHEMA_VERSION, EmbeddedStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_a_first_release_file_is_upgraded_and_keeps_its_ledger(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as db:  # the ledger-only schema, expiry in float seconds
        db.execute("CREATE TABLE event_ledger (partition_key TEXT NOT NULL, "
                   "event_id TEXT NOT NULL, expires_at REAL NOT NULL, "
                   "PRIMARY KEY (partition_key, event_id)) WITHOUT ROWID")
        db.execute("INSERT INTO event_ledger VALUES ('c-1', 'e-1', ?)",
                   ((NOW + timedelta(days=1)).timestamp(),))
    store = EmbeddedStore(path)
    await store.open()
    try:
        assert await store.seen_events([("c-1", "e-1")], NOW) == {("c-1", "e-1")}
        assert await store.seen_events([("c-1", "e-1")], NOW + timedelta(days=1)) == set()
        await store.write_batch(BatchWrite([CustomerState("c-1")]), NOW, 60, 60)
        assert await store.load_customers(["c-1"], NOW) == {"c-1": CustomerState("c-1")}
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_a_version_1_file_gains_the_new_tables_and_columns_and_keeps_its_rows(
        tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = EmbeddedStore(path)
    await store.open()
    await store.write_batch(BatchWrite([CustomerState("c-1", last_event_at=NOW)],
                                       [("c-1", "e-1")]), NOW, 60, 60)
    await store.close()
    with sqlite3.connect(path) as db:  # back to what the version 1 release wrote
        for table in ("customer_pending_sends", "forgotten", "store_meta"):
            db.execute(f"DROP TABLE {table}")
        db.execute("ALTER TABLE customers DROP COLUMN predictions")
        db.execute("PRAGMA user_version = 1")
    store = EmbeddedStore(path)
    await store.open()
    try:
        assert await store.load_customers(["c-1"], NOW) == {
            "c-1": CustomerState("c-1", last_event_at=NOW)}
        assert await store.seen_events([("c-1", "e-1")], NOW) == {("c-1", "e-1")}
        await store.forget("ref", NOW)
        assert await store.forgotten() == {"ref": NOW}
        # Version 3's column is there: predictions are kept.
        predicted = CustomerState("c-2", last_event_at=NOW, predictions=CustomerPredictions(
            0.5, 0.25, 7, NOW, {7: 1.0}, NOW))
        await store.write_batch(BatchWrite([predicted]), NOW, 60, 60)
        assert await store.load_customers(["c-2"], NOW) == {"c-2": predicted}
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = EmbeddedStore(path)
    with pytest.raises(StoreUnavailable, match="newer than this Relevanz understands"):
        await store.open()
    await store.close()


async def test_purge_deletes_exactly_the_expired_rows(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store.db")
    await store.open()
    try:
        state = CustomerState("c-1", history=[
            Interaction(NOW - timedelta(days=2), "e-1", "click"),
            Interaction(NOW - timedelta(hours=1), "e-2", "click")])
        await store.write_batch(BatchWrite([state], [("c-1", "e-1"), ("c-1", "e-2")]), NOW,
                                ledger_ttl_s=3600, history_ttl_s=3 * 86400)
        assert await store.purge_expired(NOW) == 0
        # After a day and a half: e-1's history entry and both ledger entries are due.
        assert await store.purge_expired(NOW + timedelta(days=1, hours=12)) == 3
        loaded = await store.load_customers(["c-1"], NOW)
        assert [h.event_id for h in loaded["c-1"].history] == ["e-2"]
        assert await store.seen_events([("c-1", "e-1")], NOW) == set()
    finally:
        await store.close()
