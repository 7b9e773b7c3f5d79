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
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.codec import decode
from schemas.topics import INPUT_TOPICS
from streams.settings import Settings
from streams.traffic import Message

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


def consume_all(settings: Settings, topic: str, at_least: int, timeout_s: float = 60.0,
                idle_s: float = 1.5) -> list[dict[str, Any]]:
    """Decoded messages of logical ``topic``: at least ``at_least``, then until it is quiet."""
    consumer = Consumer({"bootstrap.servers": settings.broker_servers,
                         "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    name = settings.topic(topic)
    partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, 0.2) if m.error() is None]
            got.extend(decode(m.value()) for m in batch)
            if batch:
                quiet_since = time.monotonic()
            elif len(got) >= at_least and time.monotonic() - quiet_since > idle_s:
                break
    finally:
        consumer.close()
    assert len(got) >= at_least, f"expected at least {at_least} messages on {topic}, got {len(got)}"
    return got


def check_dead_letters(settings: Settings, want: Expected) -> list[dict[str, Any]]:
    """Every malformed message is dead-lettered; a repeat only as a redelivery (same offset)."""
    letters = consume_all(settings, "dead-letters", sum(want.malformed.values()))
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
