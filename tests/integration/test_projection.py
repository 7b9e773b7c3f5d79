"""Projections are functions of the topics: replay and crash recovery rebuild them exactly."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.core.customer import CustomerState
from schemas.codec import pack
from streams.app import build_worker, utc_now
from streams.broker import EmbeddedBroker
from streams.cli.replay import plan_replay, run_replay
from streams.servers.kafka import KafkaServer
from streams.settings import Settings
from streams.sim.traffic import Message, TrafficConfig, TrafficGenerator
from streams.store import open_store
from tests.harness import eventually, eventually_async, isolated_settings, produce_raw

#: Run against the embedded broker and Apache Kafka (tests/conftest.py).
pytestmark = pytest.mark.brokers("tansu", "kafka")

RELEVANZ = str(Path(sys.executable).parent / "relevanz")


def traffic(n: int, seed: int = 3) -> list[Message]:
    """Synthetic traffic whose interest signals all come from the clicks topic.

    Kafka orders a customer's events within a topic, not across topics, and
    tag assignment follows the order in which clicks and purchases are
    applied (see the README), so purchases are left out here: with them,
    live and replay may interleave a customer's clicks and purchases
    differently and date a tag differently.  Consent changes are left out for
    the same reason (a revocation forgets what was profiled before it); the
    settings grant every purpose by default instead.  Profile updates are left
    out too: a send planned from a click uses the time zone known at that
    moment (quiet hours, the best send hour), so a profile interleaved
    differently moves the send by the zone's offset.
    """
    config = TrafficConfig.ending_at(datetime.now(UTC), n, seed=seed, customers=150,
                                     catalogue_size=20)
    return [m for m in TrafficGenerator(config).messages(n)
            if m.topic not in ("purchases", "consents", "profiles")]


def publish(settings: Settings, messages: list[Message]) -> None:
    produce_raw(settings, [(m.topic, m.key, m.value) for m in messages])


#: History kinds of the campaigns' contact log: sends, holdout exposures, proposals.
SENDS = ("trigger", "holdout", "proposal")


async def projection(settings: Settings) -> dict[str, CustomerState]:
    """The stored customers, each as far as the customer's events determine it.

    Which follow-up sends are pending (trigger id, idempotency key, channel,
    send time) follows from the events, since arbitration between candidates
    does not use the learned policy's scores.  Which item the learned policy
    put in them depends on what the shared model had learnt from everyone
    else by then, so the content id is left out of the comparison (of pending
    sends and of the sends and holdout exposures in the history).  So are the
    purchase and churn probabilities, which come from models shared by all
    customers; the send hour profile follows from the customer's own events
    and is compared.
    """
    store = open_store(settings)
    await store.open()
    try:
        return {s.customer_id: replace(
                    s, pending=[replace(p, content_id="")
                                for p in s.pending],
                    history=[replace(h, content_id="") if h.kind in SENDS else h
                             for h in s.history],
                    predictions=s.predictions and replace(s.predictions, purchase=0.0,
                                                          churn=0.0))
                async for s in store.iter_customers(utc_now())}
    finally:
        await store.close()


async def live_run(settings: Settings, messages: list[Message]) -> dict[str, CustomerState]:
    """Process ``messages`` with an in-process worker; the catalogue is published first."""
    content = [m for m in messages if m.topic == "content"]
    rest = [m for m in messages if m.topic != "content"]
    worker = build_worker(settings)
    await worker.start()
    try:
        publish(settings, content)
        await eventually(lambda: worker.accounting.events_in >= len(content), 60, "catalogue")
        publish(settings, rest)
        await eventually(lambda: worker.accounting.events_in >= len(messages), 120,
                         "every message")
    finally:
        await worker.stop()
    return await projection(settings)


async def test_replay_rebuilds_the_live_projection(broker: EmbeddedBroker,
                                                   tmp_path: Path) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)
    messages = traffic(2500)
    live = await live_run(settings, messages)
    assert len(live) > 100
    assert any(state.tags for state in live.values()), "the run should assign some tags"

    result = await run_replay(settings, progress=lambda _: None)
    assert result["events_in"] == len(messages)
    replayed = await projection(settings)
    assert replayed.keys() == live.keys()
    for cid, state in live.items():
        assert replayed[cid] == state, _difference(state, replayed[cid])


async def test_a_worker_killed_mid_stream_ends_with_the_uninterrupted_projection(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    messages = traffic(4000, seed=5)
    reference = await live_run(
        isolated_settings(broker.bootstrap_servers, tmp_path / "reference"), messages)

    settings = isolated_settings(broker.bootstrap_servers, tmp_path / "killed")
    env = {**os.environ,
           "RELEVANZ_BROKER_URL": f"kafka://{settings.broker_servers}",
           "RELEVANZ_TOPIC_PREFIX": settings.topic_prefix,
           "RELEVANZ_CONSUMER_GROUP": settings.consumer_group,
           "RELEVANZ_STORE_URL": settings.store_url,
           "RELEVANZ_WEB_PORT": "0",
           "RELEVANZ_SESSION_TIMEOUT_S": f"{settings.session_timeout_s:g}",
           "RELEVANZ_HEARTBEAT_S": f"{settings.heartbeat_s:g}",
           "RELEVANZ_COMMIT_INTERVAL_S": "0.2", "RELEVANZ_IDEMPOTENT_PRODUCERS": "false",
           "RELEVANZ_CONSENT_DEFAULT": ",".join(sorted(settings.consent_default))}
    content = [m for m in messages if m.topic == "content"]
    rest = [m for m in messages if m.topic != "content"]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([RELEVANZ, "worker"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    worker = start()
    try:
        publish(settings, content)
        publish(settings, rest[: len(rest) // 2])
        # Kill it once it has written part of the stream, so some state is stored and
        # some acknowledged offsets are not yet committed.
        await eventually(lambda: _stored_customers(settings) >= 20, 90, "some stored state")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        publish(settings, rest[len(rest) // 2:])
        worker = start()
        deadline_s = 150
        async def settled() -> bool:
            return await projection(settings) == reference
        await eventually_async(settled, deadline_s, "the projection of an uninterrupted run")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def _difference(a: CustomerState, b: CustomerState) -> str:
    parts = [f"{name}: {getattr(a, name)!r} != {getattr(b, name)!r}"
             for name in a.__dataclass_fields__ if getattr(a, name) != getattr(b, name)]
    return a.customer_id + ": " + "; ".join(parts)


def _stored_customers(settings: Settings) -> int:
    try:
        with sqlite3.connect(settings.store_path) as db:
            return int(db.execute("SELECT count(*) FROM customers").fetchone()[0])
    except sqlite3.Error:
        return 0



async def test_replay_since_a_time_rebuilds_from_the_messages_published_after_it(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)

    def click(event_id: str, customer: str) -> tuple[str, bytes, bytes]:
        return ("clicks", customer.encode(), pack({
            "event_id": event_id, "customer_id": customer, "schema_version": 1,
            "occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            "content_id": "n1"}))

    before = [click(f"a{i}", f"early-{i % 3}") for i in range(6)]
    after = [click(f"b{i}", f"late-{i % 2}") for i in range(4)]
    produce_raw(settings, before)
    since = datetime.now(UTC) + timedelta(milliseconds=5)
    while datetime.now(UTC) <= since:  # message timestamps have millisecond resolution
        await asyncio.sleep(0.005)
    produce_raw(settings, after)

    # Apache Kafka finds `since` by itself (offsets-for-times), so only the later
    # messages are read to plan; the embedded broker answers 0, so all are.
    plan = await asyncio.to_thread(plan_replay, settings, since)
    assert plan.messages == len(after)
    on_kafka = isinstance(broker, KafkaServer)
    assert plan.scanned == (len(after) if on_kafka else len(before) + len(after))
    # Each partition starts after its older messages.
    assert sum(plan.start_offsets.values()) == len(before)
    everything_older = await asyncio.to_thread(plan_replay, settings,
                                               datetime.now(UTC) + timedelta(seconds=1))
    assert everything_older.messages == 0
    assert everything_older.scanned == (0 if on_kafka else len(before) + len(after))
    assert sum(everything_older.start_offsets.values()) == len(before) + len(after)

    result = await run_replay(settings, progress=lambda _: None, since=since)
    assert result["messages_replayed"] == len(after)
    assert result["applied"] == len(after)
    rebuilt = await projection(settings)
    assert set(rebuilt) == {"late-0", "late-1"}
    assert sorted(h.event_id for s in rebuilt.values() for h in s.history) == [
        "b0", "b1", "b2", "b3"]
