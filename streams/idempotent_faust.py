"""Faust's producer with Kafka's idempotent producer on (checked against faust-streaming 0.15.3).

Faust turns ``enable_idempotence`` on only for exactly-once processing, which
brings transactions; Relevanz processes at least once, so Faust's producer
would retry a produce request without a producer id and sequence numbers,
and a retry after a lost acknowledgement could write an output twice or out
of order.  Faust offers no setting for it: its aiokafka ``Producer`` takes
extra client options from the private ``_settings_extra`` and the app builds
its producer in the private ``_new_producer``, so this module overrides both
and nothing else.  With ``RELEVANZ_IDEMPOTENT_PRODUCERS=false`` the app is
Faust's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer
from faust.types import ProducerT


class IdempotentProducer(Producer):
    """Faust's aiokafka producer with ``enable_idempotence=True`` (and so ``acks="all"``)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class IdempotentApp(faust.App):
    """A Faust app whose producer is an :class:`IdempotentProducer`."""

    def _new_producer(self) -> ProducerT:
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)
