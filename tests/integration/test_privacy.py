"""Consent and erasure end to end: a real worker on the embedded broker and store.

With the shipped, strict consent default: behaviour without consent to
profiling is skipped; a granted customer gets a follow-up decision and send
trigger; a revocation cancels the pending send downstream; an erasure
request deletes every row, tells downstream systems, and a full replay does
not bring the customer back.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource

from schemas.codec import decode, pack
from schemas.export import EXPORT_DIR
from streams.app import Worker, build_worker, utc_now
from streams.broker import EmbeddedBroker
from streams.cli.replay import run_replay
from streams.privacy import export_customer
from streams.settings import Settings
from streams.store import open_store
from streams.store.codec import CUSTOMER_TABLES
from tests import events
from tests.events import Raw
from tests.harness import consume_exactly, eventually, isolated_settings, produce_raw

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def at(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat()


def consent(event_id: str, customer: str, minutes: float, action: str,
            *purposes: str) -> Raw:
    return events.consent(event_id, customer, action, *purposes, at=at(minutes))


def click(event_id: str, customer: str, minutes: float) -> Raw:
    return events.click(event_id, customer, at=at(minutes), content_id="golf-1")


ITEM = ("content", b"golf-1", pack({
    "event_id": "i1", "content_id": "golf-1", "schema_version": 1, "occurred_at": at(-600),
    "topics": ["sports"], "channels": ["email", "push"], "slots": ["follow-up"],
    "variants": [{"language": "de", "title": "Golfreise", "url": "https://shop.example/g"}],
    "default_language": "de"}))


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    # The shipped default: nothing is granted without a recorded decision.  One
    # campaign without a holdout group, so that every allowed follow-up is sent.
    book = tmp_path / "campaigns.toml"
    book.write_text('[[campaigns]]\nid = "interest-follow-up"\ntrigger = "tag_assigned"\n'
                    'channels = ["email", "push", "sms"]\n', encoding="utf-8")
    return isolated_settings(broker.bootstrap_servers, tmp_path, consent_default=frozenset(),
                             campaigns_path=str(book))


def validate_export(exported: dict[str, object]) -> None:
    """Check an export against its published schema (which names the decisions' schema)."""
    schemas = [json.loads(path.read_text()) for path in EXPORT_DIR.glob("*.schema.json")]
    registry: Registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas)
    (schema,) = [s for s in schemas if s["$id"] == "urn:relevanz:schema:customer-export:v1"]
    # Through JSON, as the command writes it.
    jsonschema.Draft202012Validator(schema, registry=registry).validate(
        json.loads(json.dumps(exported)))


def rows_of(settings: Settings, customer_id: str) -> dict[str, int]:
    """Rows per store table that name the customer (read from the file itself)."""
    db = sqlite3.connect(settings.store_path)
    try:
        counts = {table: db.execute(f"SELECT COUNT(*) FROM {table} WHERE customer_id = ?",  # noqa: S608 - constant names
                                    (customer_id,)).fetchone()[0]
                  for table in (*CUSTOMER_TABLES, "customer_decisions")}
        counts["event_ledger"] = db.execute(
            "SELECT COUNT(*) FROM event_ledger WHERE partition_key = ?",
            (customer_id,)).fetchone()[0]
        return counts
    finally:
        db.close()


async def test_consent_gates_profiling_and_sends_and_revocation_cancels(
        worker: Worker, settings: Settings) -> None:
    produce_raw(settings, [ITEM])
    await eventually(lambda: worker.accounting.events_in >= 1, 60, "the catalogue item")
    produce_raw(settings, [
        # bob never consented: his clicks are skipped, not profiled.
        click("b1", "bob", 1), click("b2", "bob", 2), click("b3", "bob", 3),
        consent("a0", "alice", 0, "granted", "profiling", "personalisation", "email"),
    ])
    await eventually(lambda: worker.accounting.events_in >= 5, 60, "bob's clicks")
    produce_raw(settings, [click("a1", "alice", 1), click("a2", "alice", 2),
                           click("a3", "alice", 3)])
    await eventually(lambda: worker.accounting.events_in >= 8, 60, "alice's clicks")
    assert worker.accounting.skipped_without_consent == 3
    assert worker.accounting.balanced

    (trigger,) = [decode(m.value()) for m in consume_exactly(settings, "send-triggers", 1)]
    (decision,) = [decode(m.value()) for m in consume_exactly(settings, "decisions", 1)]
    pending = await export_customer(worker.store, "alice", utc_now())
    assert pending is not None
    assert pending["format_version"] == 1
    assert pending["pending"]
    assert pending["recent_decisions"]
    validate_export(pending)
    assert trigger["customer_id"] == "alice"
    assert trigger["channel"] == "email"
    assert decision["content_id"] == "golf-1"
    assert trigger["caused_by"] == decision["decision_id"]
    now = utc_now()
    bob = await worker.store.load_customers(["bob"], now)
    assert "bob" not in bob or not bob["bob"].history  # nothing behavioural about bob

    produce_raw(settings, [consent("a4", "alice", 10, "revoked", "email")])
    await eventually(lambda: worker.accounting.events_in >= 9, 60, "the revocation")
    (cancelled,) = [decode(m.value()) for m in consume_exactly(settings, "send-cancellations", 1)]
    assert cancelled["trigger_id"] == trigger["trigger_id"]
    assert cancelled["revoked"] == ["email"]
    assert cancelled["reason"] == "consent_revoked"
    state = (await worker.store.load_customers(["alice"], utc_now()))["alice"]
    assert state.pending == []
    assert state.tags
    # Predictions are profiling: alice has them (and her export shows them), bob none.
    assert state.predictions is not None
    assert state.predictions.best_hour is not None
    exported = await export_customer(worker.store, "alice", utc_now())
    assert exported is not None
    validate_export(exported)
    assert exported["predictions"]["best_hour"] == state.predictions.best_hour
    assert exported["predictions"]["as_of"] == state.predictions.at.isoformat()
    # With the worker's models, as of the time asked: a year of silence changes them.
    forecaster = worker.stage.forecaster if worker.stage is not None else None
    assert forecaster is not None
    year = utc_now() + timedelta(days=365)
    later = await export_customer(worker.store, "alice", year, forecaster)
    assert later is not None
    assert later["predictions"]["as_of"] == year.isoformat()
    assert later["predictions"]["purchase"] == forecaster.predict_at(state, year)[0]  # type: ignore[index] # alice has predictions
    assert "bob" not in bob or bob["bob"].predictions is None
    produce_raw(settings, [consent("a5", "alice", 11, "revoked", "profiling")])
    await eventually(lambda: worker.accounting.events_in >= 10, 60, "the profiling revocation")
    state = (await worker.store.load_customers(["alice"], utc_now()))["alice"]
    assert state.predictions is None
    assert not state.tags


async def test_clicks_read_before_an_earlier_dated_consent_are_used_when_it_arrives(
        worker: Worker, settings: Settings) -> None:
    produce_raw(settings, [ITEM])
    await eventually(lambda: worker.accounting.events_in >= 1, 60, "the catalogue item")
    produce_raw(settings, [click("c1", "carol", 5), click("c2", "carol", 6)])
    await eventually(lambda: worker.accounting.events_in >= 3, 60, "carol's clicks")
    assert worker.accounting.skipped_without_consent == 2
    # Held, not profiled; her export shows them as they arrived.
    exported = await export_customer(worker.store, "carol", utc_now())
    assert exported is not None
    assert exported["history"] == []
    assert [e["event_id"] for e in exported["parked"]] == ["c1", "c2"]

    # Her consent was given before the clicks; the topics were read the other way round.
    produce_raw(settings, [consent("k1", "carol", 0, "granted", "profiling")])
    await eventually(lambda: worker.accounting.events_in >= 4, 60, "carol's consent")
    assert worker.accounting.skipped_without_consent == 0
    assert worker.accounting.released_after_consent == 2
    assert worker.accounting.balanced
    state = (await worker.store.load_customers(["carol"], utc_now()))["carol"]
    assert [h.event_id for h in state.history] == ["c1", "c2"]
    assert state.parked == []
    assert state.interests


async def test_erasure_leaves_no_row_and_replay_does_not_resurrect(settings: Settings) -> None:
    worker = build_worker(settings)
    await worker.start()
    try:
        await _erase_alice(worker, settings)
    finally:
        await worker.stop()
    counts = await run_replay(settings, lambda _: None)
    assert counts["events_in"] == 9
    assert counts["forgotten"] == 6
    assert sum(rows_of(settings, "alice").values()) == 0
    store = open_store(settings)
    await store.open()
    try:
        assert await export_customer(store, "alice", utc_now()) is None
        assert (await store.load_customers(["carol"], utc_now()))["carol"].history
    finally:
        await store.close()


async def _erase_alice(worker: Worker, settings: Settings) -> None:
    produce_raw(settings, [ITEM])
    await eventually(lambda: worker.accounting.events_in >= 1, 60, "the catalogue item")
    # Consents first: Kafka orders a customer's events within a topic, not across topics.
    produce_raw(settings, [
        consent("a0", "alice", 0, "granted", "profiling", "personalisation", "email"),
        consent("c0", "carol", 0, "granted", "profiling"),
    ])
    await eventually(lambda: worker.accounting.events_in >= 3, 60, "the consents")
    produce_raw(settings, [click("a1", "alice", 1), click("a2", "alice", 2),
                           click("a3", "alice", 3), click("c1", "carol", 1)])
    await eventually(lambda: worker.accounting.send_triggers == 1
                     and worker.accounting.events_in >= 7, 60, "the first events")
    assert sum(rows_of(settings, "alice").values()) > 0
    assert await export_customer(worker.store, "alice", utc_now()) is not None

    produce_raw(settings, [consent("a9", "alice", 20, "erasure_requested")])
    await eventually(lambda: worker.accounting.erasures == 1, 60, "the erasure")
    # A late event from before the request (clicks and consents are different
    # topics, so it is sent once the erasure is through): erased too.
    produce_raw(settings, [click("a5", "alice", 5)])
    # (consume_exactly blocks the loop the worker runs in: wait for the worker first.)
    await eventually(lambda: worker.accounting.forgotten == 1, 60, "the late event")
    (erased,) = [decode(m.value()) for m in consume_exactly(settings, "customer-erased", 1)]
    assert erased["customer_id"] == "alice"
    assert erased["caused_by"] == "a9"
    assert worker.accounting.erasures == 1
    assert worker.accounting.forgotten == 1
    (cancelled,) = [decode(m.value()) for m in consume_exactly(settings, "send-cancellations", 1)]
    assert cancelled["reason"] == "erasure_requested"
    assert rows_of(settings, "alice") == dict.fromkeys(rows_of(settings, "alice"), 0)
    assert await export_customer(worker.store, "alice", utc_now()) is None
    carol = await export_customer(worker.store, "carol", utc_now())
    assert carol is not None
    assert carol["ledger_event_ids"] == ["c0", "c1"]
