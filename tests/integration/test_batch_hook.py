"""The ingest agent's batch hook on a real worker and broker: what each hook is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.ingest import HandledBatch
from streams.app import Worker
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from tests import events
from tests.harness import eventually, isolated_settings, produce_raw


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker.bootstrap_servers, tmp_path)


async def test_every_hook_is_told_each_handled_batch_with_its_valid_events(
    worker: Worker, settings: Settings
) -> None:
    assert worker.ingest is not None
    told: list[HandledBatch] = []
    worker.ingest.batch_hooks.append(told.append)
    produce_raw(settings, [events.click("e1", "c1"), events.click("e2", "c2"),
                           ("clicks", b"c1", b"\xc1 not msgpack"), events.click("e1", "c1")])
    await eventually(lambda: sum(len(b.events) for b in told) >= 4, 120,
                     "every message handled")
    # Each valid event by its ledger key (the duplicate too); the dead letter has none.
    assert sorted(k for b in told for k in b.keys) == [("c1", "e1"), ("c1", "e1"), ("c2", "e2")]
    assert all(b.seconds > 0 for b in told)
    # The metrics hook the worker wires is one of them and saw the same batches.
    assert len(worker.ingest.batch_hooks) == 2
