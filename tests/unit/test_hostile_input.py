"""Every input path's parse step turns *anything* into a record or an InvalidEvent.

The ingest agent (every input topic, the compacted ``content`` catalogue
included), the catalogue reader and the controls reader each rely on that
one guarantee: a single ``except InvalidEvent`` is their whole guard.  And
the dead letter made from the error always encodes and always fits.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import encode, pack
from schemas.dead_letters import RESERVE_BYTES, dead_letter
from schemas.errors import InvalidEvent
from schemas.records import ControlChanged, Record
from schemas.topics import INPUT_TOPICS
from schemas.validation import Limits, parse_message, parse_record
from tests.strategies import NOW, hostile_values

INPUTS = [t.name for t in INPUT_TOPICS]
#: What a producer accepts by default (Faust and aiokafka): dead letters must fit it.
PRODUCER_MAX = 1_000_000


def _dead_letter_fits(topic: str, key: bytes | None, raw: bytes, error: InvalidEvent) -> None:
    letter = dead_letter(source_topic=topic, partition=0, offset=0, key=key, value=raw,
                         reason=str(error), field=error.field, received_at=NOW,
                         max_bytes=PRODUCER_MAX)
    assert len(encode(letter)) <= PRODUCER_MAX


@pytest.mark.parametrize("topic", INPUTS)
@given(data=st.data())
def test_any_message_on_an_input_topic_is_a_record_or_an_invalid_event(
    topic: str, data: st.DataObject
) -> None:
    raw = data.draw(hostile_values(topic), label="value")
    key = data.draw(st.one_of(st.none(), st.binary(max_size=8), st.just(b"c1")), label="key")
    try:
        record = parse_message(topic, key, raw, now=NOW, limits=Limits(1024 * 1024))
    except InvalidEvent as error:
        _dead_letter_fits(topic, key, raw, error)
        return
    assert isinstance(record, Record)


@given(raw=hostile_values("content"))
def test_any_control_record_is_a_record_or_an_invalid_event(raw: bytes) -> None:
    try:
        record = parse_record(ControlChanged, raw)
    except InvalidEvent as error:
        _dead_letter_fits("controls", b"all", raw, error)
        return
    assert isinstance(record, ControlChanged)


# --- the inputs that escaped as other exceptions once ---------------------------------

LONE_SURROGATE_CONTENT = (b'{"event_id": "e1", "content_id": "\\ud800", "schema_version": 1,'
                          b' "occurred_at": "2025-12-31T10:00:00+01:00"}')
#: A msgpack timestamp (extension -1, 96-bit form) 2**62 seconds after 1970.
HUGE_TIMESTAMP = (b"\x82" + pack("schema_version") + b"\x01" + pack("occurred_at")
                  + b"\xc7\x0c\xff" + struct.pack(">I", 0) + struct.pack(">q", 2**62))


@pytest.mark.parametrize(("raw", "reason"), [
    (LONE_SURROGATE_CONTENT, "content_id: not valid Unicode text (a lone surrogate"),
    (HUGE_TIMESTAMP, "not valid msgpack (a timestamp out of range)"),
    (b'{"\\ud800": 1, "schema_version": 1}', "\\ud800: unknown field"),
    (b"[" * 60_000, "not valid JSON: nested too deeply"),
])
def test_inputs_that_once_crashed_a_reader_get_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_message("content", b"n1", raw, now=NOW)
    assert str(caught.value).encode("utf-8", "backslashreplace").decode().startswith(reason)
    _dead_letter_fits("content", b"n1", raw, caught.value)
    with pytest.raises(InvalidEvent):
        parse_record(ControlChanged, raw)


def test_a_huge_whole_number_in_a_number_field_is_named() -> None:
    raw = (b'{"event_id": "e1", "customer_id": "c1", "schema_version": 1, '
           b'"occurred_at": "2025-12-31T10:00:00+01:00", "order_id": "o1", "currency": "EUR",'
           b' "items": [{"product_id": "p1", "quantity": 1, "unit_price": 1}], "total": 1'
           + b"0" * 400 + b"}")
    with pytest.raises(InvalidEvent, match="total: a whole number too large"):
        parse_message("purchases", b"c1", raw, now=NOW)


def test_a_dead_letter_above_the_producer_limit_keeps_a_prefix_length_and_digest() -> None:
    raw = bytes(range(256)) * 65536  # 16 MiB
    letter = dead_letter(source_topic="clicks", partition=3, offset=9, key=b"k" * 5000,
                         value=raw, reason="message is too large", field=None,
                         received_at=NOW, max_bytes=PRODUCER_MAX)
    assert len(encode(letter)) <= PRODUCER_MAX
    assert letter.original == raw[:PRODUCER_MAX - RESERVE_BYTES]
    assert (f"original is {len(raw)} bytes, above the 983616 a dead letter carries: the first "
            f"983616 bytes are kept; sha256 {hashlib.sha256(raw).hexdigest()})") in letter.reason
    assert letter.original_key == b"k" * 1024
    assert "key is 5000 bytes" in letter.reason


# --- the bounds of the contracts ----------------------------------------------------

CLICK = {"event_id": "e1", "customer_id": "c1", "schema_version": 1,
         "occurred_at": "2025-12-31T10:00:00+01:00"}


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("clicks", {**CLICK, "topics": [f"t{i}" for i in range(3000)]},
     "topics: has 3000 entries; at most 20 allowed"),
    ("clicks", {**CLICK, "topics": ["x" * 101]}, "topics[0]: has 101 characters; at most 100"),
    ("clicks", {**CLICK, "url": "u" * 2001}, "url: has 2001 characters; at most 2000"),
    ("purchases", {**CLICK, "order_id": "o1", "total": 1.0, "currency": "EUR",
                   "items": [{"product_id": "p", "quantity": 1, "unit_price": 1.0}] * 501},
     "items: has 501 entries; at most 500 allowed"),
    ("profiles", {**CLICK, "locale": "de-DE", "language": "de", "time_zone": "UTC",
                  "attributes": {f"a{i}": "v" for i in range(101)}},
     "attributes: has 101 entries; at most 100 allowed"),
    ("profiles", {**CLICK, "locale": "de-DE", "language": "de", "time_zone": "UTC",
                  "attributes": {"tier": "v" * 1001}},
     "attributes.tier: has 1001 characters; at most 1000 allowed"),
])
def test_a_list_or_text_beyond_its_bound_is_a_dead_letter_naming_the_bound(
    topic: str, payload: dict[str, object], reason: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_message(topic, b"c1", pack(payload), now=NOW, limits=Limits(1024 * 1024))
    assert str(caught.value).startswith(reason)


def test_dead_letters_are_kept_below_the_smaller_of_producer_and_broker_limits() -> None:
    from streams.app import publish_limit

    assert publish_limit(65536, PRODUCER_MAX, None) == PRODUCER_MAX  # not reported
    assert publish_limit(65536, PRODUCER_MAX, 500_000) == 500_000
    assert publish_limit(16 * 1024 * 1024, PRODUCER_MAX, 2 * PRODUCER_MAX) == PRODUCER_MAX
