"""Topic declarations: the broker-side topics for every contract in :mod:`schemas.topics`.

:func:`ensure_topics` creates missing topics (customer-keyed ones with the
configured partition count, ``content`` compacted) and refuses to run when an
existing customer-keyed topic has a different partition count, because then
one worker would no longer own a customer across all topics.

Input topics are created to take the largest event ``RELEVANZ_MAX_EVENT_BYTES``
admits: Apache Kafka refuses a message above a topic's ``max.message.bytes``
(1,048,588 bytes unless the broker says otherwise) to its producer, so an
event the worker would take (or dead-letter with a reason) never reached it.
Above that default, an input topic is created with ``max.message.bytes`` of
the limit plus :data:`RECORD_HEADROOM_BYTES` for the key, headers and the
record batch's framing.  An input topic that exists with a smaller limit is
named in a warning at start (:func:`input_limit_warnings`); it is not altered.
"""

from __future__ import annotations

import time

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined] # public, not re-exported in stubs
    AdminClient,
    ConfigResource,
    NewTopic,
)

from schemas.topics import INPUT_TOPICS, TOPICS
from streams.errors import BrokerUnavailable, ConfigError
from streams.settings import Settings

log = structlog.get_logger(__name__)

#: Room above an event's bytes for its key, headers and record batch framing.
RECORD_HEADROOM_BYTES = 64 * 1024
#: Apache Kafka's default ``message.max.bytes`` (a topic's ``max.message.bytes``).
KAFKA_DEFAULT_MESSAGE_BYTES = 1_048_588
_INPUT_NAMES = frozenset(t.name for t in INPUT_TOPICS)


def input_message_bytes(max_event_bytes: int) -> int | None:
    """The ``max.message.bytes`` an input topic is created with, or None for the
    broker's default when that already takes every admitted event.

    >>> input_message_bytes(65536) is None
    True
    >>> input_message_bytes(16 * 1024 * 1024)
    16842752
    """
    wanted = max_event_bytes + RECORD_HEADROOM_BYTES
    return wanted if wanted > KAFKA_DEFAULT_MESSAGE_BYTES else None


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> None:
    """Create every Relevanz topic that does not exist yet; check the rest."""
    admin = AdminClient({"bootstrap.servers": settings.broker_servers,
                         "log_level": 2})  # one readable error below, not a log per retry
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"broker {settings.broker_servers} not reachable within {timeout_s:g}s "
            f"({exc.args[0].str()}); check RELEVANZ_BROKER_URL"
        ) from exc
    missing = []
    for contract in TOPICS.values():
        name = settings.topic(contract.name)
        if name in existing:
            have = len(existing[name].partitions)
            if contract.customer_keyed and have != settings.partitions:
                raise ConfigError(
                    f"RELEVANZ_PARTITIONS: topic {name} has {have} partitions but "
                    f"{settings.partitions} are configured; customer-keyed topics must match"
                )
            continue
        config = {"cleanup.policy": "compact"} if contract.compacted else {}
        limit = input_message_bytes(settings.max_event_bytes)
        if contract.name in _INPUT_NAMES and limit is not None:
            config["max.message.bytes"] = str(limit)
        missing.append(NewTopic(name, settings.partitions, settings.replication, config=config))
    if not missing:
        return
    for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # a racing worker created it
                raise BrokerUnavailable(f"could not create topic {name}: {exc.args[0]}") from exc
        log.info("topic_created", topic=name, partitions=settings.partitions)
    _wait_until_served(admin, [t.topic for t in missing], timeout_s)


def _wait_until_served(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Return once metadata shows every partition of ``names`` with a leader.

    Apache Kafka answers CreateTopics once its controller has the topic, a
    moment before the broker serves it: a client that asks for its partitions
    at once (the catalogue reader) would find none.  The embedded broker
    serves a topic as soon as it is created.
    """
    deadline = time.monotonic() + timeout_s
    waiting = list(names)
    while waiting:
        topics = admin.list_topics(timeout=timeout_s).topics
        waiting = [n for n in waiting
                   if n not in topics or topics[n].error is not None
                   or not topics[n].partitions
                   or any(p.leader < 0 for p in topics[n].partitions.values())]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailable(
                f"topics {', '.join(waiting)} were created but not served within "
                f"{timeout_s:g}s")
        time.sleep(0.05)


def message_limit(settings: Settings, logical: str, timeout_s: float = 5.0) -> int | None:
    """The largest message the broker takes on topic ``logical`` (its effective
    ``max.message.bytes``), or None when the broker does not report it (the
    embedded broker reports no topic configuration)."""
    return message_limits(settings, [logical], timeout_s)[logical]


def message_limits(settings: Settings, logicals: list[str], timeout_s: float = 5.0
                   ) -> dict[str, int | None]:
    """:func:`message_limit` of each topic in ``logicals``, in one request."""
    admin = AdminClient({"bootstrap.servers": settings.broker_servers, "log_level": 2})
    resources = {settings.topic(logical): logical for logical in logicals}
    limits: dict[str, int | None] = dict.fromkeys(logicals)
    futures = admin.describe_configs([ConfigResource("TOPIC", name) for name in resources],
                                     request_timeout=timeout_s)
    for resource, future in futures.items():
        try:
            entry = future.result(timeout_s).get("max.message.bytes")
        except (KafkaException, TimeoutError, ValueError) as exc:
            log.info("topic_limit_not_reported", topic=resource.name, error=str(exc))
            continue
        if entry is not None and entry.value:
            limits[resources[resource.name]] = int(entry.value)
    return limits


def input_limit_warnings(settings: Settings, limits: dict[str, int | None]) -> list[str]:
    """One line per input topic whose broker limit (from :func:`message_limits`)
    may refuse events the settings admit (their record with its key and framing
    is larger than the event); none where the broker reports no limit."""
    lines = []
    for contract in INPUT_TOPICS:
        limit = limits.get(contract.name)
        if limit is not None and limit < settings.max_event_bytes + RECORD_HEADROOM_BYTES:
            lines.append(
                f"topic {settings.topic(contract.name)} takes messages up to {limit} bytes "
                f"but RELEVANZ_MAX_EVENT_BYTES is {settings.max_event_bytes}: the broker "
                f"refuses larger events to their producers; raise the topic's "
                f"max.message.bytes to at least "
                f"{settings.max_event_bytes + RECORD_HEADROOM_BYTES}")
    return lines
