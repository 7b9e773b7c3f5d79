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
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from faust.models import fields

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
_T = TypeVar("_T")
_EARLIEST_YEAR = 1900
_FLOAT_MAX = int(sys.float_info.max)


def parse_message(
    topic: str,
    key: bytes | None,
    raw: bytes | None,
    *,
    now: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> Record:
    """Validate one message of logical ``topic`` into its record.

    Raises only :class:`InvalidEvent`, whatever the bytes: a parser error this
    module did not foresee (a codec or library bug on a hostile input) is
    turned into one too, so every caller's single ``except InvalidEvent`` is
    the whole guard (see :func:`guarded`).
    """
    return guarded(_parse_message, topic, key, raw, now=now, limits=limits)


def parse_record(record_type: type[Record], raw: bytes) -> Record:
    """Decode and validate one value of ``record_type`` (no key, size or time checks).

    For topics only the engine writes, such as ``controls``.  Like
    :func:`parse_message` it raises only :class:`InvalidEvent`.

    >>> from schemas.records import ControlChanged
    >>> parse_record(ControlChanged, b'{"control_id": "\\\\ud800"}')
    Traceback (most recent call last):
    ...
    schemas.errors.InvalidEvent: control_id: not valid Unicode text (a lone surrogate ...
    """
    return guarded(lambda: build(record_type, decode(raw)))


def guarded(parse: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``parse(*args, **kwargs)``, with anything it raises turned into :class:`InvalidEvent`.

    The one guard of every input path: a message no parser step foresaw
    becomes a dead letter naming the error, never a crashed reader.

    >>> guarded(int, "1")
    1
    >>> guarded(lambda: 1 / 0)
    Traceback (most recent call last):
    ...
    schemas.errors.InvalidEvent: could not be validated (ZeroDivisionError: division by zero); ...
    """
    try:
        return parse(*args, **kwargs)
    except InvalidEvent:
        raise
    except RecursionError as exc:
        raise InvalidEvent(None, "nested too deeply to be validated") from exc
    except Exception as exc:  # the guard: anything becomes a reason
        raise InvalidEvent(
            None, f"could not be validated ({type(exc).__name__}: {_safe(str(exc), 200)}); "
            "please report this message to the Relevanz maintainers") from exc


def _safe(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters and made encodable (lone surrogates escaped)."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def _parse_message(topic: str, key: bytes | None, raw: bytes | None, *, now: datetime,
                   limits: Limits) -> Record:
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
    plan, names = _plan(record_type)
    unknown = payload.keys() - names
    if unknown:
        name = sorted(str(u) for u in unknown)[0]
        raise InvalidEvent(
            path + name, f"unknown field (not in the {record_type.__name__} contract)"
        )
    values: dict[str, Any] = {}
    for name, required, check, rule, items in plan:
        if name not in payload:
            if required:
                raise InvalidEvent(path + name, "missing")
            continue
        where = path + name
        value = check(payload[name], where)
        if rule is not None and value is not None:
            rule(value, where)
            if items is not None:
                if isinstance(value, dict):  # a map: the item rule is its values'
                    for name_, item in value.items():
                        items(item, f"{where}.{name_}")
                else:
                    for i, item in enumerate(value):
                        items(item, f"{where}[{i}]")
        values[name] = value
    make = _MAKERS.get(record_type)
    if make is None:
        make = _MAKERS[record_type] = _maker(record_type)
    return make(values)


#: Per record type: builds it from checked values (see :func:`_maker`).
_MAKERS: dict[type[Record], Callable[[dict[str, Any]], Record]] = {}
#: Faust field descriptors whose ``__set__`` stores the value as given when
#: neither coercion nor a tag is configured.
_PLAIN_DESCRIPTORS = frozenset({
    fields.FieldDescriptor, fields.StringField, fields.BooleanField, fields.IntegerField,
    fields.FloatField, fields.DatetimeField, fields.BytesField,
})


def _maker(record_type: type[Record]) -> Callable[[dict[str, Any]], Record]:
    """How to build ``record_type`` from values that passed its checks.

    Faust's generated ``__init__`` passes every field through its descriptor,
    which, for our records (no coercion, no tags, no validation, no
    ``__post_init__``), stores the value, or the field's default for a None.
    That is a third of validating a click, so it is done here directly,
    with the same result (a test compares both); any other record type goes
    through ``__init__``.
    """
    options = record_type._options
    descriptors = options.descriptors
    plain = (not options.validation and not hasattr(record_type, "__post_init__")
             and all(isinstance(d, fields.FieldDescriptor) and type(d) in _PLAIN_DESCRIPTORS
                     and d.tag is None and not d.coerce for d in descriptors.values()))
    if not plain:
        return lambda values: record_type(**values)
    defaults = tuple((name, options.defaults.get(name)) for name in options.fields)
    new = object.__new__

    def make(values: dict[str, Any]) -> Record:
        record: Record = new(record_type)
        state = record.__dict__
        state["__evaluated_fields__"] = set()
        for name, default in defaults:
            value = values.get(name)
            state[name] = default if value is None else value
        return record

    return make


#: Checks a value at a field path and returns it as the record stores it.
Check = Callable[[Any, str], Any]
#: Checks a value against a rule at a field path.
RuleCheck = Callable[[Any, str], None]
#: Per field: name, required, type check, rule check, rule check of each list item.
_Step = tuple[str, bool, Check, RuleCheck | None, RuleCheck | None]


_PLANS: dict[type[Record], tuple[tuple[_Step, ...], frozenset[str]]] = {}


def _plan(record_type: type[Record]) -> tuple[tuple[_Step, ...], frozenset[str]]:
    """How to validate ``record_type``, worked out once from its annotations and rules.

    Validation runs for every consumed event, so the annotations are read
    here, not per value.
    """
    known = _PLANS.get(record_type)
    if known is not None:
        return known
    options = record_type._options
    rules = constraints_of(record_type)
    steps = []
    for name, annotation in options.fields.items():
        rule = rules.get(name)
        steps.append((
            name, name not in options.defaults, _checker(annotation),
            None if rule is None else _rule_check(rule),
            None if rule is None or rule.items is None else _rule_check(rule.items),
        ))
    plan = _PLANS[record_type] = (tuple(steps), frozenset(options.fields))
    return plan


def _kind(value: Any) -> str:
    names = {
        str: "a string", bool: "true/false", int: "a whole number", float: "a number",
        list: "a list", dict: "a map", bytes: "bytes", type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


_CHECKERS: dict[Any, Check] = {}


def _checker(annotation: Any) -> Check:
    """The type check of one annotation (optional, list, map, nested record or scalar)."""
    check = _CHECKERS.get(annotation)
    if check is None:
        check = _CHECKERS[annotation] = _make_checker(annotation)
    return check


def _make_checker(annotation: Any) -> Check:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        check_inner = _checker(inner)

        def optional(value: Any, where: str) -> Any:
            return None if value is None else check_inner(value, where)

        return optional
    if origin is list:
        (item,) = typing.get_args(annotation)
        check_item = _checker(item)

        def check_list(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise InvalidEvent(where, f"expected a list, got {_kind(value)}")
            return [check_item(v, f"{where}[{i}]") for i, v in enumerate(value)]

        return check_list
    if origin is dict:
        _, item = typing.get_args(annotation)
        check_value = _checker(item)

        def check_map(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise InvalidEvent(where, f"expected a map, got {_kind(value)}")
            for k, v in value.items():
                if not isinstance(k, str):
                    raise InvalidEvent(where, f"keys must be strings, got {_kind(k)}")
                check_value(v, f"{where}.{k}")
            return dict(value)

        return check_map
    if isinstance(annotation, type) and issubclass(annotation, Record):
        record_type = annotation

        def nested(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise InvalidEvent(where, f"expected a map, got {_kind(value)}")
            return build(record_type, value, where + ".")

        return nested
    return _SCALARS.get(annotation) or partial(_unknown_type, annotation)


def _unknown_type(annotation: Any, value: Any, where: str) -> Any:
    raise TypeError(f"no validation for {annotation!r} at {where}")  # a contract bug


def _str(value: Any, where: str) -> Any:
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                # JSON's \ud800 escapes decode to text that no UTF-8 encoder takes.
                raise InvalidEvent(where, "not valid Unicode text (a lone surrogate at "
                                   f"character {exc.start}); send UTF-8 text") from exc
        return value
    raise InvalidEvent(where, f"expected a string, got {_kind(value)}")


def _bool(value: Any, where: str) -> Any:
    if isinstance(value, bool):
        return value
    raise InvalidEvent(where, f"expected true or false, got {_kind(value)}")


def _int(value: Any, where: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidEvent(where, f"expected a whole number, got {_kind(value)}")


def _float(value: Any, where: str) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
            raise InvalidEvent(where, "a whole number too large for a number field")
        if not math.isfinite(value):
            raise InvalidEvent(where, f"expected a finite number, got {value}")
        return float(value)
    raise InvalidEvent(where, f"expected a number, got {_kind(value)}")


def _bytes(value: Any, where: str) -> Any:
    if isinstance(value, bytes):
        return value
    raise InvalidEvent(where, f"expected bytes, got {_kind(value)}")


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
    extra = parsed.microsecond % 1000
    return parsed.replace(microsecond=parsed.microsecond - extra) if extra else parsed


@cache
def _rule_check(rule: Rule) -> RuleCheck:
    """``rule`` as one check; a rule with only choices (the common case) skips the rest."""
    only_choices = rule.choices is not None and rule == Rule(choices=rule.choices,
                                                             description=rule.description)
    if only_choices:
        choices = rule.choices
        assert choices is not None

        def check_choice(value: Any, where: str) -> None:
            if value not in choices:
                raise InvalidEvent(where, f"{value!r} is not one of {', '.join(choices)}")

        return check_choice
    lo, hi = rule.min_length, rule.max_length
    if (lo is not None and hi is not None
            and rule == Rule(min_length=lo, max_length=hi, description=rule.description)):
        # Every id field has such a rule: one comparison instead of all of _apply_rule.

        def check_length(value: Any, where: str) -> None:
            if not lo <= len(value) <= hi:
                _apply_rule(rule, value, where)  # raises the same error as before

        return check_length
    return partial(_apply_rule, rule)


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


_SCALARS: dict[Any, Check] = {str: _str, bool: _bool, int: _int, float: _float, bytes: _bytes,
                              datetime: _datetime}


#: The label of a dead letter whose field is not one the topic's contract declares.
OTHER_FIELD = "other"
#: The label of a dead letter about the message as a whole (no field).
WHOLE_MESSAGE = "message"


def field_label(topic: str, field: str | None) -> str:
    """The bounded label a dead letter is counted under: the contract's own name.

    A field path the sender wrote (an unknown field, a map key) is never a
    label: only the top-level field names of ``topic``'s records are, plus
    :data:`WHOLE_MESSAGE` and :data:`OTHER_FIELD`, so the count of labels
    per topic is fixed by the contract whatever arrives.

    >>> field_label("purchases", "items[1].quantity")
    'items'
    >>> field_label("clicks", "uuid-123e4567"), field_label("clicks", None)
    ('other', 'message')
    >>> field_label("no-such-topic", "customer_id")
    'other'
    """
    if field is None:
        return WHOLE_MESSAGE
    name = re.split(r"[.\[]", field, maxsplit=1)[0]
    return name if name in contract_fields(topic) else OTHER_FIELD


@cache
def contract_fields(topic: str) -> frozenset[str]:
    """Every top-level field name of every version of ``topic``'s record (empty if unknown).

    >>> sorted(contract_fields("clicks"))[:3]
    ['campaign_id', 'channel', 'content_id']
    """
    contract = TOPICS.get(topic)
    if contract is None:
        return frozenset()
    return frozenset().union(*(t._options.fields for t in contract.versions.values()))
