"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the session, spoken to over the Kafka protocol."""
    log_dir = Path(tmp_path_factory.mktemp("broker"))
    with EmbeddedBroker(log_dir / "broker.log") as running:
        yield running
