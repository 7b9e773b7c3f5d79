"""Follow a compacted topic after it was read whole: the loop the catalogue and controls share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError


async def keep_following(read_once: Callable[[], Awaitable[None]], log: Any, reader: str
                         ) -> None:
    """Call ``read_once`` for ever; a broker error or a bug is logged and retried in 1 s.

    ``reader`` names the log events: ``<reader>_read_failed`` (the client reconnects)
    and ``<reader>_reader_failed`` (a bug, not the input: parsing is guarded).
    """
    while True:
        try:
            await read_once()
        except KafkaError as exc:  # the client reconnects; keep following
            log.warning(f"{reader}_read_failed", error=str(exc))
            await asyncio.sleep(1.0)
        except Exception:  # a bug, not the input (parsing is guarded): say so, go on
            log.exception(f"{reader}_reader_failed")
            await asyncio.sleep(1.0)
