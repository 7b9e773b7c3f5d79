"""Where a worker's input partitions end and where reading them started (checked
against faust-streaming 0.15.3).

The low watermark (``agents/core/watermarks.py``) needs, per assigned input
partition, its end offset and the offset reading began from.  The end offset
is public (the consumer's ``highwater``, fresh with each fetch response).  The
start is not: Faust keeps the committed offsets it seeked to at assignment in
the consumer's private ``_committed_offset`` map, read here and nowhere else.
Check that name when upgrading Faust; without it every partition not read yet
counts from offset 0, which can only hold the clock longer, never let it run
ahead.
"""

from __future__ import annotations

import faust
from faust.exceptions import ConsumerNotStarted
from faust.types import TP


def input_offsets(app: faust.App, topics: set[str]) -> dict[TP, tuple[int | None, int]]:
    """Per assigned partition of ``topics``: its end offset from the
    consumer's latest fetch (None: not known yet) and the offset reading started from
    (the group's committed offset, as Faust seeked to it; 0 when none)."""
    consumer = app.consumer
    try:
        assigned = consumer.assignment()
    except ConsumerNotStarted:
        return {}
    committed = getattr(consumer, "_committed_offset", {})
    found: dict[TP, tuple[int | None, int]] = {}
    for tp in assigned:
        if tp.topic not in topics:
            continue
        try:
            end: int | None = consumer.highwater(tp)
        except AssertionError:  # aiokafka asserts the partition is assigned
            end = None
        found[tp] = (end, committed.get(tp) or 0)
    return found
