"""Bytes on the wire: msgpack for everything we write, JSON accepted at ingest.

A record becomes a plain map of its fields (:func:`to_wire`): datetimes as
ISO 8601 strings with offset, bytes as msgpack ``bin``, nested records as
maps, no class paths.  :func:`decode` reads either msgpack or JSON (JSON is
recognised by its first byte, ``{``, ``[`` or blank, none of which can start
a msgpack map) and raises :class:`InvalidEvent` when it can do neither.

>>> from datetime import datetime, timezone
>>> from schemas.records import InterestTagChanged
>>> tag = InterestTagChanged(event_id="e1", customer_id="c1",
...     occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
...     schema_version=1, tag="fashion-trends", topic="fashion",
...     change="assigned", score=3.0, caused_by="e0")
>>> decode(encode(tag))["occurred_at"]
'2026-01-02T03:04:05+00:00'
>>> decode(b'{"a": 1}')
{'a': 1}
>>> try:
...     decode(b'\\xc1')
... except InvalidEvent as error:
...     print(error)
not valid msgpack (invalid type byte); send a msgpack map or a JSON object
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgpack
from faust.serializers import codecs

from schemas.errors import InvalidEvent
from schemas.records import Record

# Bytes that start JSON text; as msgpack they would be a bare small integer,
# which is never a valid event either way.
_JSON_START = frozenset(b" \t\r\n{[")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Record):
        return to_wire(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_wire(record: Record) -> dict[str, Any]:
    """The record as a plain map of wire values."""
    return {name: _plain(getattr(record, name)) for name in record._options.fields}


def encode(record: Record) -> bytes:
    """msgpack bytes of a record."""
    return pack(to_wire(record))


def pack(payload: Any) -> bytes:
    """msgpack bytes of a plain value (``bin`` for bytes, ``str`` for text)."""
    packed: bytes = msgpack.packb(payload, use_bin_type=True)
    return packed


def decode(raw: bytes) -> Any:
    """Plain value from msgpack or JSON bytes; :class:`InvalidEvent` otherwise."""
    if raw[:1] and raw[0] in _JSON_START:
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidEvent(None, f"not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise InvalidEvent(None, "not valid JSON: nested too deeply") from exc
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False, timestamp=3)
    except (ValueError, TypeError, OverflowError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as exc:
        raise InvalidEvent(
            None, f"not valid msgpack ({_msgpack_problem(exc)}); "
            "send a msgpack map or a JSON object"
        ) from exc


def _msgpack_problem(exc: Exception) -> str:
    if isinstance(exc, msgpack.ExtraData):
        return "extra bytes after the first value"
    if isinstance(exc, msgpack.FormatError):
        return "invalid type byte"
    if isinstance(exc, msgpack.StackError):
        return "nested too deeply"
    if isinstance(exc, OverflowError):  # a timestamp extension beyond year 9999
        return "a timestamp out of range"
    if isinstance(exc, TypeError):  # a map keyed by a list or a map
        return "map keys must be strings"
    if "exceeds max_" in str(exc) or "incomplete" in str(exc):
        return "incomplete message"
    return str(exc) or type(exc).__name__


class MsgpackCodec(codecs.Codec):
    """Faust codec for msgpack without a Base64 stage (registered as ``msgpack``)."""

    def _dumps(self, obj: Any) -> bytes:
        return pack(_plain(obj))

    def _loads(self, s: bytes) -> Any:
        return msgpack.unpackb(s, raw=False, strict_map_key=False)


def register_codec() -> None:
    """Make ``serializer="msgpack"`` available to Faust topics (idempotent)."""
    codecs.register("msgpack", MsgpackCodec())
