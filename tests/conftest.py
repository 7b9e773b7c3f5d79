"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from streams.broker import EmbeddedBroker

# Machines running the suite are shared and noisy: a single slow example is
# not a failure, so property tests have no per-example deadline.
settings.register_profile("relevanz", deadline=None)
settings.load_profile("relevanz")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """An embedded Tansu broker per test module, spoken to over the Kafka protocol.

    Per module rather than per session: the broker keeps everything in memory,
    and in one long session it was seen to time out fetches and to answer a
    fetch with another topic's messages. It starts in well under a second.
    """
    log_dir = Path(tmp_path_factory.mktemp("broker"))
    with EmbeddedBroker(log_dir / "broker.log") as running:
        yield running
