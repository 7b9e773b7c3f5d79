"""Fixtures shared by the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from streams.app import Worker, build_worker
from streams.settings import Settings

#: A worker's stop is bounded by its shutdown timeout; far beyond that is a hang.
STOP_DEADLINE_S = 120.0


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """A started worker on the module's ``settings`` (each module defines its own)."""
    running = build_worker(settings)
    await running.start()
    try:
        yield running
    finally:
        await stop_or_explain(running.stop(), "the worker to stop")


async def stop_or_explain(stopping: object, what: str) -> None:
    """Await ``stopping``; past :data:`STOP_DEADLINE_S` fail with every task's stack."""
    task = asyncio.ensure_future(stopping)  # type: ignore[arg-type]
    done, _ = await asyncio.wait({task}, timeout=STOP_DEADLINE_S)
    if task in done:
        task.result()
        return
    stacks = []
    for other in asyncio.all_tasks():
        frames = other.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        stacks.append(f"{other.get_name()}: {where}")
    pytest.fail(f"waited {STOP_DEADLINE_S:g}s for {what}; tasks:\n" + "\n".join(stacks))
