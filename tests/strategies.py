"""Shared hypothesis strategies: valid payloads and records for every topic.

A *payload* is what an upstream producer sends: a plain map with times as
ISO 8601 strings carrying an offset (``Z`` or ``+01:00``), so it is valid as
JSON and as msgpack.  Payload strategies are derived from the record
annotations and the rules in :mod:`schemas.constraints` (choices, patterns,
lengths, ranges, IANA time zones), with a few domain overrides (purposes,
channels, interest topics) so generated events read like real ones.  Event
times lie between 1995 and :data:`LATEST`, never in the future of :data:`NOW`.

Use them as::

    from tests.strategies import NOW, key_of, payloads_for, records_for

    @given(payloads_for("clicks"))
    def test_something(payload): ...

    @given(records_for("purchases"))
    def test_other(purchase): ...
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from schemas import records as r
from schemas.constraints import Rule, constraints_of
from schemas.records import Record
from schemas.topics import TOPICS
from schemas.validation import build

#: A ``now`` later than every generated event time (pass it to parse_message).
NOW = datetime(2026, 1, 1, tzinfo=UTC)
#: The latest event time generated: backfills reach far back, never ahead.
# Naive on purpose: hypothesis bounds st.datetimes with naive values and adds zones itself.
LATEST = datetime(2025, 12, 31, 23, 59, 59)  # noqa: DTZ001
EARLIEST = datetime(1995, 1, 1)  # noqa: DTZ001
#: A few real IANA zones, with and without daylight saving time.
TIME_ZONES = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
)
INTEREST_TOPICS = ("fashion", "sports", "travel", "home", "books", "electronics")
SLOTS = ("newsletter-hero", "newsletter-block", "landing-page", "web-banner", "app-card")


def offsets() -> SearchStrategy[timezone]:
    """Fixed UTC offsets from -12:00 to +14:00 in whole minutes."""
    minutes = st.integers(min_value=-12 * 60, max_value=14 * 60)
    return minutes.map(lambda m: timezone(timedelta(minutes=m)))


def times() -> SearchStrategy[datetime]:
    """Timezone-aware datetimes between :data:`EARLIEST` and :data:`LATEST`."""
    return st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=offsets())


def iso_times() -> SearchStrategy[str]:
    """Aware times as ISO 8601 strings; UTC sometimes written with ``Z``."""

    def text(moment: datetime, zulu: bool) -> str:
        shown = moment.isoformat()
        return shown.removesuffix("+00:00") + "Z" if zulu and shown.endswith("+00:00") else shown

    return st.builds(text, times(), st.booleans())


def _texts(rule: Rule | None) -> SearchStrategy[str]:
    if rule is not None and rule.choices is not None:
        return st.sampled_from(rule.choices)
    if rule is not None and rule.pattern is not None:
        return st.from_regex(rule.pattern, fullmatch=True)
    if rule is not None and rule.format == "iana-time-zone":
        return st.sampled_from(TIME_ZONES)
    low = rule.min_length if rule is not None and rule.min_length is not None else 0
    high = rule.max_length if rule is not None and rule.max_length is not None else 24
    return st.text(min_size=low, max_size=min(high, max(low, 24)))


def _numbers(annotation: Any, rule: Rule | None) -> SearchStrategy[Any]:
    low = rule.min_value if rule is not None else None
    high = rule.max_value if rule is not None else None
    whole = st.integers(
        min_value=-(2**53) if low is None else int(low),
        max_value=2**53 if high is None else int(high),
    )
    if annotation is int:
        return whole
    # A float field accepts whole numbers too, as JSON producers send them.
    return whole | st.floats(
        min_value=low, max_value=high, allow_nan=False, allow_infinity=False
    )


def values(annotation: Any, rule: Rule | None = None) -> SearchStrategy[Any]:
    """Valid wire values for a field of type ``annotation`` under ``rule``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return st.none() | values(inner, rule)
    if origin is list:
        (item,) = typing.get_args(annotation)
        low = rule.min_length if rule is not None and rule.min_length is not None else 0
        return st.lists(values(item, rule.items if rule is not None else None),
                        min_size=low, max_size=max(low, 3))
    if origin is dict:
        key, item = typing.get_args(annotation)
        return st.dictionaries(values(key), values(item, rule.items if rule else None),
                               max_size=3)
    if isinstance(annotation, type) and issubclass(annotation, Record):
        return payloads(annotation)
    if annotation is str:
        return _texts(rule)
    if annotation is bool:
        return st.booleans()
    if annotation in (int, float):
        return _numbers(annotation, rule)
    if annotation is datetime:
        return iso_times()
    if annotation is bytes:
        return st.binary(max_size=64)
    raise TypeError(f"no strategy for {annotation!r}")


#: Domain overrides per record type and field (generic values are valid but dull).
_OVERRIDES: dict[type[Record], dict[str, SearchStrategy[Any]]] = {
    r.Clicked: {"topics": st.lists(st.sampled_from(INTEREST_TOPICS), max_size=3)},
    r.PurchasedItem: {"topics": st.lists(st.sampled_from(INTEREST_TOPICS), max_size=2)},
    r.ConsentChanged: {
        "purposes": st.lists(st.sampled_from(r.PURPOSES), unique=True, max_size=3),
    },
    r.ContentPublished: {
        "topics": st.lists(st.sampled_from(INTEREST_TOPICS), min_size=1, max_size=3, unique=True),
        "channels": st.lists(st.sampled_from(r.CHANNELS), min_size=1, max_size=3, unique=True),
        "slots": st.lists(st.sampled_from(SLOTS), max_size=2, unique=True),
    },
    r.DecisionMade: {"channel": st.sampled_from(r.CHANNELS)},
}


def payloads(record_type: type[Record], **overrides: SearchStrategy[Any]) -> SearchStrategy[
    dict[str, Any]
]:
    """Valid payload maps for ``record_type``; fields with a default may be left out.

    ``overrides`` replaces the strategy of named fields, e.g.
    ``payloads(Clicked, customer_id=st.just("c1"))``.
    """
    options = record_type._options
    rules = constraints_of(record_type)
    chosen = {**_OVERRIDES.get(record_type, {}), **overrides}
    required: dict[str, SearchStrategy[Any]] = {}
    optional: dict[str, SearchStrategy[Any]] = {}
    for name, annotation in options.fields.items():
        strategy = chosen[name] if name in chosen else values(annotation, rules.get(name))
        (optional if name in options.defaults else required)[name] = strategy
    return st.fixed_dictionaries(required, optional=optional)


def payloads_for(topic: str, version: int | None = None, **overrides: SearchStrategy[Any]) -> (
    SearchStrategy[dict[str, Any]]
):
    """Valid payloads of ``topic`` (its newest version unless ``version`` is given)."""
    contract = TOPICS[topic]
    record_type = contract.versions[version] if version is not None else contract.record
    version_strategy = st.just(version if version is not None else max(contract.versions))
    return payloads(record_type, **{"schema_version": version_strategy, **overrides})


def build_record(topic: str, payload: dict[str, Any]) -> Record:
    """The record a valid ``payload`` of ``topic`` stands for."""
    return build(TOPICS[topic].versions[payload["schema_version"]], payload)


def records_for(topic: str, **overrides: SearchStrategy[Any]) -> SearchStrategy[Record]:
    """Valid records of ``topic`` (built through the validator, as ingest does)."""
    return payloads_for(topic, **overrides).map(lambda p: build_record(topic, p))


def key_of(topic: str, payload: dict[str, Any]) -> bytes | None:
    """The message key a producer must use for ``payload`` on ``topic``.

    >>> key_of("clicks", {"customer_id": "c1"})
    b'c1'
    """
    field = TOPICS[topic].key
    return None if field is None else str(payload[field]).encode()


# --- hostile input: what a careless or malicious upstream may send ------------------

#: Text a JSON producer may smuggle in: lone surrogates (only JSON escapes make
#: them), control characters, very long strings.
_HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "x" * 5000]),
)
#: Numbers beyond what any field holds (JSON has no limit on integers).
_HOSTILE_NUMBERS = st.one_of(
    st.integers(), st.sampled_from([10**400, -(10**400), 2**64, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_HOSTILE_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _HOSTILE_NUMBERS, _HOSTILE_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_HOSTILE_TEXT, inner, max_size=4)),
    max_leaves=12,
)


def _msgpack_ext() -> SearchStrategy[bytes]:
    """A msgpack extension value; type -1 is the timestamp, any 4, 8 or 12 bytes."""
    def framed(code: int, data: bytes) -> bytes:
        return bytes([0xC7, len(data), code & 0xFF]) + data
    return st.one_of(
        st.builds(framed, st.just(-1), st.binary(min_size=4, max_size=4)
                  | st.binary(min_size=8, max_size=8) | st.binary(min_size=12, max_size=12)),
        st.builds(framed, st.integers(-128, 127), st.binary(max_size=16)),
    )


def _msgpack_map_with(field_bytes: SearchStrategy[bytes]) -> SearchStrategy[bytes]:
    """A msgpack map of a valid-looking header and one hostile raw value."""
    from schemas.codec import pack

    def joined(name: str, value: bytes) -> bytes:
        return b"\x82" + pack("schema_version") + b"\x01" + pack(name) + value
    return st.builds(joined, st.sampled_from(["occurred_at", "event_id", "topics", "x"]),
                     field_bytes)


def hostile_values(topic: str) -> SearchStrategy[bytes]:
    """Message values for ``topic`` that a careless or malicious producer may send:
    arbitrary bytes, JSON and msgpack with extension types (timestamps out of
    range), deep nesting, huge numbers and lone surrogates, and valid payloads
    with one field replaced by such a value."""
    import json

    from schemas.codec import pack

    def as_json(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()

    def mangled(payload: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
        return {**payload, name: value}

    payload_field = payloads_for(topic).flatmap(lambda p: st.builds(
        mangled, st.just(p), st.sampled_from([*sorted(p), "\ud800"]), _HOSTILE_JSON))
    deep = st.integers(10, 200_000).map(lambda n: b"[" * n) | st.integers(10, 3000).map(
        lambda n: b"\x91" * n + b"\xc0")
    return st.one_of(
        st.binary(max_size=2000),
        _HOSTILE_JSON.map(as_json),
        payload_field.map(as_json),
        payload_field.filter(_packable).map(pack),
        _msgpack_ext(),
        _msgpack_map_with(_msgpack_ext()),
        deep,
    )


def _packable(payload: dict[str, Any]) -> bool:
    from schemas.codec import pack

    try:
        pack(payload)
    except (OverflowError, UnicodeEncodeError, TypeError, ValueError):
        return False
    return True
