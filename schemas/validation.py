"""Untrusted bytes to typed records, or a reason a person can act on.

:func:`parse_message` is the whole ingest contract check: size, decoding,
schema version, field types and rules, key consistency and event time.  It
raises :class:`InvalidEvent` naming the field and the problem; it never
returns a half-valid record.  Type checks are driven by the records' own
annotations, so a new field needs no validation code.

>>> from datetime import datetime, timezone
>>> from schemas.codec import pack
>>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> raw = pack({"event_id": "e1", "customer_id": "c1", "schema_version": 1,
...             "occurred_at": "2025-12-31T23:00:00+00:00", "content_id": "n1"})
>>> parse_message("clicks", b"c1", raw, now=now).content_id
'n1'
>>> parse_message("clicks", b"c1", pack({"event_id": "e1"}), now=now)
Traceback (most recent call last):
...
schemas.errors.InvalidEvent: schema_version: missing; every event must name ...
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.codec import decode
from schemas.constraints import Rule, constraints_of
from schemas.errors import InvalidEvent
from schemas.records import Record
from schemas.topics import TOPICS


@dataclass(frozen=True)
class Limits:
    """Bounds that make an otherwise well-formed event invalid."""

    #: Largest accepted message value in bytes.
    max_event_bytes: int = 64 * 1024
    #: How far in the future an event time may lie (clock skew allowance).
    max_future: timedelta = timedelta(days=1)


DEFAULT_LIMITS = Limits()
_EARLIEST_YEAR = 1900


def parse_message(
    topic: str,
    key: bytes | None,
    raw: bytes | None,
    *,
    now: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> Record:
    """Validate one message of logical ``topic`` into its record."""
    contract = TOPICS[topic]
    if raw is None:
        raise InvalidEvent(None, "message has no value (tombstone or empty message)")
    if len(raw) > limits.max_event_bytes:
        raise InvalidEvent(
            None,
            f"message is {len(raw)} bytes, above the limit of "
            f"{limits.max_event_bytes} bytes",
        )
    payload = decode(raw)
    if not isinstance(payload, dict):
        raise InvalidEvent(
            None, f"expected a map of fields, got {_kind(payload)}"
        )
    version = payload.get("schema_version")
    known = ", ".join(str(v) for v in sorted(contract.versions))
    if version is None:
        raise InvalidEvent(
            "schema_version",
            f"missing; every event must name its contract version ({topic} knows {known})",
        )
    record_type = contract.versions.get(version) if type(version) is int else None
    if record_type is None:
        raise InvalidEvent(
            "schema_version",
            f"{json.dumps(version, default=repr)} is not a known version of the {topic} "
            f"contract (known: {known})",
        )
    record = build(record_type, payload)
    if contract.key is not None:
        expected = getattr(record, contract.key)
        if key is None or key != expected.encode():
            shown = "no key" if key is None else f"key {key.decode(errors='replace')!r}"
            raise InvalidEvent(
                contract.key,
                f"message has {shown} but {contract.key} is {expected!r}; "
                f"{topic} messages must be keyed by {contract.key}",
            )
    occurred_at: datetime = record.occurred_at  # every input record has it
    if occurred_at - now > limits.max_future:
        hours = limits.max_future.total_seconds() / 3600
        raise InvalidEvent(
            "occurred_at",
            f"{occurred_at.isoformat()} is more than {hours:g} hours ahead of now; "
            "event times may lie in the past but not in the future",
        )
    return record


def build(record_type: type[Record], payload: dict[str, Any], path: str = "") -> Record:
    """Check ``payload`` against ``record_type``'s fields and rules; build it."""
    fields = _fields(record_type)
    unknown = payload.keys() - fields.keys()
    if unknown:
        name = sorted(str(u) for u in unknown)[0]
        raise InvalidEvent(
            path + name, f"unknown field (not in the {record_type.__name__} contract)"
        )
    rules = constraints_of(record_type)
    values: dict[str, Any] = {}
    for name, (annotation, required) in fields.items():
        where = path + name
        if name not in payload:
            if required:
                raise InvalidEvent(where, "missing")
            continue
        value = _check(annotation, payload[name], where)
        rule = rules.get(name)
        if rule is not None and value is not None:
            _apply_rule(rule, value, where)
            if rule.items is not None:
                for i, item in enumerate(value):
                    _apply_rule(rule.items, item, f"{where}[{i}]")
        values[name] = value
    return record_type(**values)


_FIELDS: dict[type[Record], dict[str, tuple[Any, bool]]] = {}


def _fields(record_type: type[Record]) -> dict[str, tuple[Any, bool]]:
    """Field name -> (annotation, required), computed once per record type."""
    fields = _FIELDS.get(record_type)
    if fields is None:
        options = record_type._options
        fields = _FIELDS[record_type] = {
            name: (annotation, name not in options.defaults)
            for name, annotation in options.fields.items()
        }
    return fields


def _kind(value: Any) -> str:
    names = {
        str: "a string", bool: "true/false", int: "a whole number", float: "a number",
        list: "a list", dict: "a map", bytes: "bytes", type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _check(annotation: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _check(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise InvalidEvent(where, f"expected a list, got {_kind(value)}")
        (item,) = typing.get_args(annotation)
        return [_check(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidEvent(where, f"expected a map, got {_kind(value)}")
        _, item = typing.get_args(annotation)
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidEvent(where, f"keys must be strings, got {_kind(k)}")
            _check(item, v, f"{where}.{k}")
        return dict(value)
    if isinstance(annotation, type) and issubclass(annotation, Record):
        if not isinstance(value, dict):
            raise InvalidEvent(where, f"expected a map, got {_kind(value)}")
        return build(annotation, value, where + ".")
    return _scalar(annotation, value, where)


def _scalar(annotation: Any, value: Any, where: str) -> Any:
    if annotation is str:
        if isinstance(value, str):
            return value
        raise InvalidEvent(where, f"expected a string, got {_kind(value)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise InvalidEvent(where, f"expected true or false, got {_kind(value)}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InvalidEvent(where, f"expected a whole number, got {_kind(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise InvalidEvent(where, f"expected a finite number, got {value}")
            return float(value)
        raise InvalidEvent(where, f"expected a number, got {_kind(value)}")
    if annotation is bytes:
        if isinstance(value, bytes):
            return value
        raise InvalidEvent(where, f"expected bytes, got {_kind(value)}")
    if annotation is datetime:
        return _datetime(value, where)
    raise TypeError(f"no validation for {annotation!r} at {where}")  # a contract bug


def _datetime(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):  # a msgpack timestamp
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidEvent(
                where, f"{value!r} is not an ISO 8601 time such as 2026-03-01T09:30:00+01:00"
            ) from exc
    else:
        raise InvalidEvent(where, f"expected an ISO 8601 time string, got {_kind(value)}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidEvent(where, f"{value!r} has no time zone offset; add Z or +01:00")
    if parsed.year < _EARLIEST_YEAR:
        # Backfills reach far back, but not this far; such times also overflow
        # when converted to UTC near year 1.
        raise InvalidEvent(where, f"{value!r} is before {_EARLIEST_YEAR}; not a plausible time")
    # Times are kept to the millisecond, as the stores keep them: state computed
    # live and state reloaded from the store must agree exactly.
    return parsed.replace(microsecond=parsed.microsecond - parsed.microsecond % 1000)


def _apply_rule(rule: Rule, value: Any, where: str) -> None:
    if rule.choices is not None and value not in rule.choices:
        raise InvalidEvent(
            where, f"{value!r} is not one of {', '.join(rule.choices)}"
        )
    if rule.min_value is not None and value < rule.min_value:
        raise InvalidEvent(where, f"{value!r} is below the minimum {rule.min_value:g}")
    if rule.max_value is not None and value > rule.max_value:
        raise InvalidEvent(where, f"{value!r} is above the maximum {rule.max_value:g}")
    unit = "characters" if isinstance(value, str) else "entries"
    if rule.min_length is not None and len(value) < rule.min_length:
        raise InvalidEvent(where, "must not be empty" if rule.min_length == 1
                           else f"has {len(value)} {unit}; at least {rule.min_length} needed")
    if rule.max_length is not None and len(value) > rule.max_length:
        raise InvalidEvent(
            where, f"has {len(value)} {unit}; at most {rule.max_length} allowed")
    if rule.pattern is not None and not _regex(rule.pattern).fullmatch(value):
        what = rule.description or f"the pattern {rule.pattern}"
        raise InvalidEvent(where, f"{value!r} is not a valid {what}")
    if rule.format == "iana-time-zone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidEvent(
                where, f"{value!r} is not an IANA time zone such as Europe/Berlin"
            ) from exc


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
