"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streams.app import Worker, build_worker
from streams.settings import Settings


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """A started worker on the module's ``settings`` (each module defines its own)."""
    running = build_worker(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
