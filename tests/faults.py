"""Helpers of the fault tests: worker processes, the store's ledger, committed offsets.

The fault tests count where every message went from what outlives a worker:
the store's event ledger (one row per applied event, keyed by ``event_id``),
the dead-letters topic and the consumer group's committed offsets, plus the
``worker_stopped`` line a worker logs when it stops cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from schemas.codec import decode
from schemas.topics import INPUT_TOPICS
from streams.settings import Settings
from streams.sim.traffic import Message
from tests.harness import consume_all

RELEVANZ = str(Path(sys.executable).parent / "relevanz")
INPUTS = tuple(t.name for t in INPUT_TOPICS)


@dataclass(frozen=True)
class Expected:
    """What a stream of messages must leave behind, worked out from the messages."""

    #: ``(partition key, event_id)`` of every valid event: the ledger must hold exactly these.
    ledger: frozenset[tuple[str, str]]
    #: Values of the malformed messages, each of which must be dead-lettered once.
    malformed: Counter[bytes]
    #: Valid messages that repeat an earlier one (recognised as duplicates).
    duplicates: int
    total: int


def expected(messages: list[Message]) -> Expected:
    keys: set[tuple[str, str]] = set()
    duplicates = 0
    for m in messages:
        if m.malformed:
            continue
        payload = decode(m.value)
        key = (str(payload.get("customer_id") or payload["content_id"]), payload["event_id"])
        duplicates += key in keys
        keys.add(key)
    return Expected(frozenset(keys), Counter(m.value for m in messages if m.malformed),
                    duplicates, len(messages))


def ledger(settings: Settings) -> set[tuple[str, str]]:
    """Every ``(partition key, event_id)`` in the embedded store's ledger (empty if none yet)."""
    try:
        with sqlite3.connect(settings.store_path, timeout=10) as db:
            return set(db.execute("SELECT partition_key, event_id FROM event_ledger"))
    except sqlite3.OperationalError:  # not created yet
        return set()


def committed(settings: Settings) -> int:
    """Sum of the consumer group's committed offsets over every input partition.

    Topics start empty at offset 0, so this is the number of input messages
    whose processing the group has committed.
    """
    consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                         "group.id": settings.consumer_group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(settings.topic(t), p)
                      for t in INPUTS for p in range(settings.partitions)]
        return sum(tp.offset for tp in consumer.committed(partitions, timeout=15)
                   if tp.offset >= 0)
    finally:
        consumer.close()


def consume_decoded(settings: Settings, topic: str, at_least: int = 0) -> list[dict[str, Any]]:
    """Decoded messages of logical ``topic``, up to its end as it is now: at least ``at_least``."""
    return [decode(m.value()) for m in consume_all(settings, topic, at_least)]


def stored_output_ids(settings: Settings) -> dict[str, set[str]]:
    """Ids of the decisions and pending send triggers in the embedded store: each was an
    output of a stored batch, so each must have been published."""
    with sqlite3.connect(settings.store_path, timeout=10) as db:
        return {
            "decisions": {d for (d,) in db.execute("SELECT decision_id FROM customer_decisions")},
            "send-triggers": {t for (t,) in db.execute(
                "SELECT trigger_id FROM customer_pending_sends")},
        }


def check_outputs_published(settings: Settings) -> None:
    """Every decision and pending send the store holds is on its topic (the outbox's promise)."""
    for topic, ids in stored_output_ids(settings).items():
        assert ids, f"the stream stored no {topic}: nothing to check"
        field = "decision_id" if topic == "decisions" else "trigger_id"
        published = {m[field] for m in consume_decoded(settings, topic)}
        assert not ids - published, f"{len(ids - published)} stored {topic} never published"


def check_dead_letters(settings: Settings, want: Expected) -> list[dict[str, Any]]:
    """Every malformed message is dead-lettered; a repeat only as a redelivery (same offset)."""
    letters = consume_decoded(settings, "dead-letters", sum(want.malformed.values()))
    by_id: dict[str, dict[str, Any]] = {}
    for letter in letters:
        first = by_id.setdefault(letter["dead_letter_id"], letter)
        assert first["original"] == letter["original"], "one offset, two different messages"
    assert Counter(letter["original"] for letter in by_id.values()) == want.malformed
    return letters


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``relevanz worker`` process for ``settings``."""
    return {**os.environ,
            "RELEVANZ_BROKER_URL": f"kafka://{settings.broker_servers}",
            "RELEVANZ_TOPIC_PREFIX": settings.topic_prefix,
            "RELEVANZ_CONSUMER_GROUP": settings.consumer_group,
            "RELEVANZ_STORE_URL": settings.store_url,
            "RELEVANZ_PARTITIONS": str(settings.partitions),
            "RELEVANZ_WEB_PORT": "0",
            "RELEVANZ_LOG_FORMAT": "json", "RELEVANZ_LOG_LEVEL": "info",
            "RELEVANZ_SESSION_TIMEOUT_S": f"{settings.session_timeout_s:g}",
            "RELEVANZ_HEARTBEAT_S": f"{settings.heartbeat_s:g}",
            "RELEVANZ_COMMIT_INTERVAL_S": f"{settings.commit_interval_s:g}",
            "RELEVANZ_IDEMPOTENT_PRODUCERS": "true" if settings.idempotent_producers else "false",
            **extra}


class WorkerProcess:
    """A ``relevanz worker`` subprocess whose JSON log lines go to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen([RELEVANZ, "worker"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=self._log)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
        return found

    def assignment(self) -> set[int] | None:
        """The input partitions of the latest rebalance, None before the first."""
        lines = self.events("partitions_assigned")
        return set(lines[-1]["partitions"]) if lines else None

    def terminate(self, timeout_s: float) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds the process took to exit."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        return code, time.monotonic() - start

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stopped(self) -> dict[str, Any]:
        """The ``worker_stopped`` line: the worker's final accounting."""
        (line,) = self.events("worker_stopped")
        return line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def balanced(counts: dict[str, Any]) -> bool:
    return bool(counts["events_in"] == counts["applied"] + counts["duplicates"]
                + counts["dead_letters"])
