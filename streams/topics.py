"""Topic declarations: the broker-side topics for every contract in :mod:`schemas.topics`.

:func:`ensure_topics` creates missing topics (customer-keyed ones with the
configured partition count, ``content`` compacted) and refuses to run when an
existing customer-keyed topic has a different partition count, because then
one worker would no longer own a customer across all topics.
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

from schemas.topics import TOPICS
from streams.errors import BrokerUnavailable, ConfigError
from streams.settings import Settings

log = structlog.get_logger(__name__)


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
    admin = AdminClient({"bootstrap.servers": settings.broker_servers, "log_level": 2})
    resource = ConfigResource("TOPIC", settings.topic(logical))
    try:
        (future,) = admin.describe_configs([resource], request_timeout=timeout_s).values()
        entry = future.result(timeout_s).get("max.message.bytes")
    except (KafkaException, TimeoutError, ValueError) as exc:
        log.info("topic_limit_not_reported", topic=resource.name, error=str(exc))
        return None
    return int(entry.value) if entry is not None and entry.value else None
