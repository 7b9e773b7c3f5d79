"""Publishing events to the input topics with confluent-kafka.

:class:`Publisher` counts deliveries and failures from the broker's delivery
reports; :func:`read_event_lines` turns JSON lines into messages, reporting
each bad line by number instead of stopping.  Used by ``relevanz produce``,
the demo and the tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.codec import pack
from schemas.topics import INPUT_TOPICS, TOPICS
from streams.errors import BrokerUnavailable
from streams.settings import Settings

INPUT_NAMES = tuple(t.name for t in INPUT_TOPICS)


@dataclass
class DeliveryReport:
    """What the broker confirmed."""

    delivered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Publisher:
    """A confluent-kafka producer for Relevanz topics that counts confirmations."""

    def __init__(self, settings: Settings, linger_ms: int = 5,
                 connect_timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.report = DeliveryReport()
        #: The librdkafka configuration the producer is built with.
        self.config: dict[str, Any] = {
            "bootstrap.servers": settings.broker_servers,
            "acks": "all",
            # A retried send is written once and in order (librdkafka's idempotent
            # producer, which also works on the embedded broker).
            "enable.idempotence": settings.idempotent_producers,
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": 500_000,
            # librdkafka logs every reconnect attempt; an unreachable broker is
            # reported once, below, instead.
            "log_level": 2,
        }
        self._producer = Producer(self.config)
        try:
            self._producer.list_topics(timeout=connect_timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"broker {settings.broker_servers} not reachable within "
                f"{connect_timeout_s:g}s ({exc.args[0].str()}); check RELEVANZ_BROKER_URL"
            ) from exc

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.report.delivered += 1
        else:
            self.report.failed += 1
            name = error.name()
            self.report.errors[name] = self.report.errors.get(name, 0) + 1

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one message for logical ``topic``; waits when the local queue is full."""
        while True:
            try:
                self._producer.produce(self.settings.topic(topic), value=value, key=key,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise BrokerUnavailable(f"cannot publish to {topic}: {exc.args[0]}") from exc
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> DeliveryReport:
        """Wait for every queued message's delivery report."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise BrokerUnavailable(
                f"{remaining} messages still unconfirmed after {timeout_s:g}s"
            )
        return self.report


@dataclass(frozen=True)
class LineMessage:
    """One input line turned into a message, or the reason it could not be."""

    line_number: int
    topic: str = ""
    key: bytes | None = None
    value: bytes = b""
    error: str | None = None


def read_event_lines(lines: Iterable[str | bytes], default_topic: str | None = None
                     ) -> Iterator[LineMessage]:
    """Messages from JSON lines.

    A line is either ``{"topic": "clicks", "event": {...}}`` or, with
    ``default_topic``, the bare event.  The event is sent as msgpack and keyed
    by its ``customer_id`` (``content_id`` for content) when it has one; the
    worker validates the rest and dead-letters what is invalid.  Blank lines
    are skipped.  Lines given as bytes must be UTF-8; a line that is not, or
    whose text no encoder takes (a lone surrogate from a JSON escape), is
    reported with its number like any other bad line.

    >>> [m.error or m.topic for m in read_event_lines(
    ...     ['{"topic": "clicks", "event": {"customer_id": "c1"}}', "", "{oops", "[1]"])]
    ['clicks', 'line 3: not valid JSON: Expecting property name enclosed in double quotes', \
'line 4: expected an object with "topic" and "event"']
    >>> [m.error for m in read_event_lines(
    ...     [b'\\xff{}', '{"topic": "clicks", "event": {"customer_id": "\\\\ud800"}}'])]
    ['line 1: not UTF-8 text (byte 0xff at position 0)', \
'line 2: holds text that is not valid Unicode (a lone surrogate); fix the line']
    """
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield LineMessage(number, error=f"line {number}: not UTF-8 text (byte "
                                                f"0x{raw[exc.start]:02x} at position {exc.start})")
                continue
        else:
            line = raw
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield LineMessage(number, error=f"line {number}: not valid JSON: {exc.msg}")
            continue
        except RecursionError:
            yield LineMessage(number, error=f"line {number}: not valid JSON: nested too deeply")
            continue
        try:
            message = _line_message(number, data, default_topic)
        except UnicodeEncodeError:
            message = LineMessage(number, error=f"line {number}: holds text that is not valid "
                                                "Unicode (a lone surrogate); fix the line")
        except (OverflowError, ValueError, TypeError, RecursionError) as exc:
            message = LineMessage(number, error=f"line {number}: cannot be sent as msgpack "
                                                f"({type(exc).__name__}: {exc})")
        yield message


def _line_message(number: int, data: object, default_topic: str | None) -> LineMessage:
    """The message of one parsed line, or the reason it cannot be routed."""
    if default_topic is not None:
        topic, event = default_topic, data
    elif isinstance(data, dict) and "topic" in data and "event" in data:
        topic, event = data["topic"], data["event"]
    else:
        return LineMessage(
            number, error=f'line {number}: expected an object with "topic" and "event"')
    if not isinstance(topic, str) or topic not in INPUT_NAMES:
        return LineMessage(number, error=f"line {number}: unknown topic {topic!r} "
                                          f"(input topics: {', '.join(INPUT_NAMES)})")
    key_field = TOPICS[topic].key
    key_value = event.get(key_field) if isinstance(event, dict) and key_field else None
    key = key_value.encode() if isinstance(key_value, str) else None
    return LineMessage(number, topic=topic, key=key, value=pack(event))
