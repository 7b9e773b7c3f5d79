"""Ingest validation: valid messages become records, others a reason to act on.

The table below is the contract with operators: each malformed input and the
exact reason that lands in its dead letter.  Property tests check that every
valid payload is accepted in either encoding, and that no input, however
mangled, raises anything but :class:`InvalidEvent`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import pack
from schemas.errors import InvalidEvent
from schemas.records import Record
from schemas.topics import INPUT_TOPICS
from schemas.validation import Limits, parse_message
from tests.strategies import NOW, build_record, key_of, payloads_for

INPUTS = [t.name for t in INPUT_TOPICS]
AT = "2025-12-31T10:00:00+01:00"
CLICK: dict[str, Any] = {
    "event_id": "e1", "customer_id": "c1", "occurred_at": AT, "schema_version": 1,
}
ITEM: dict[str, Any] = {"product_id": "p1", "quantity": 1, "unit_price": 9.5}
PURCHASE: dict[str, Any] = {
    **CLICK, "order_id": "o1", "items": [ITEM], "total": 9.5, "currency": "EUR",
}
PROFILE: dict[str, Any] = {
    **CLICK, "locale": "de-DE", "language": "de", "time_zone": "Europe/Berlin",
}
CONTENT: dict[str, Any] = {
    "event_id": "e1", "content_id": "n1", "occurred_at": AT, "schema_version": 1,
    "topics": ["fashion"], "channels": ["email"], "slots": [],
    "variants": [{"language": "de", "title": "Mode", "url": "https://shop.example/de"}],
    "default_language": "de",
}


def _without(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != name}


def _parse(topic: str, raw: bytes | None, key: bytes | None = b"c1") -> Record:
    return parse_message(topic, key, raw, now=NOW)


# (case, topic, key, raw value, exact reason)
MALFORMED: list[tuple[str, str, bytes | None, bytes | None, str]] = [
    ("missing field", "clicks", b"c1", pack(_without(CLICK, "customer_id")),
     "customer_id: missing"),
    ("null for a required field", "clicks", b"c1", pack({**CLICK, "event_id": None}),
     "event_id: expected a string, got null"),
    ("wrong type, nested path", "purchases", b"c1",
     pack({**PURCHASE, "items": [ITEM, {**ITEM, "quantity": "2"}]}),
     "items[1].quantity: expected a whole number, got a string"),
    ("wrong type, list", "clicks", b"c1", pack({**CLICK, "topics": "fashion"}),
     "topics: expected a list, got a string"),
    ("wrong type, map value", "profiles", b"c1", pack({**PROFILE, "attributes": {"tier": 3}}),
     "attributes.tier: expected a string, got a whole number"),
    ("not a finite number", "purchases", b"c1",
     json.dumps({**PURCHASE, "total": float("nan")}).encode(),
     "total: expected a finite number, got nan"),
    ("schema_version missing", "clicks", b"c1", pack(_without(CLICK, "schema_version")),
     "schema_version: missing; every event must name its contract version (clicks knows 1)"),
    ("unknown schema_version", "clicks", b"c1", pack({**CLICK, "schema_version": 2}),
     "schema_version: 2 is not a known version of the clicks contract (known: 1)"),
    ("schema_version as text", "clicks", b"c1", pack({**CLICK, "schema_version": "1"}),
     'schema_version: "1" is not a known version of the clicks contract (known: 1)'),
    ("naive datetime", "clicks", b"c1", pack({**CLICK, "occurred_at": "2025-06-01T12:00:00"}),
     "occurred_at: '2025-06-01T12:00:00' has no time zone offset; add Z or +01:00"),
    ("not a time", "clicks", b"c1", pack({**CLICK, "occurred_at": "yesterday"}),
     "occurred_at: 'yesterday' is not an ISO 8601 time such as 2026-03-01T09:30:00+01:00"),
    ("time as a number", "clicks", b"c1", pack({**CLICK, "occurred_at": 1767225600}),
     "occurred_at: expected an ISO 8601 time string, got a whole number"),
    ("future time", "clicks", b"c1", pack({**CLICK, "occurred_at": "2026-01-02T00:00:01Z"}),
     "occurred_at: 2026-01-02T00:00:01+00:00 is more than 24 hours ahead of now; "
     "event times may lie in the past but not in the future"),
    ("key mismatch", "clicks", b"c2", pack(CLICK),
     "customer_id: message has key 'c2' but customer_id is 'c1'; "
     "clicks messages must be keyed by customer_id"),
    ("no key", "clicks", None, pack(CLICK),
     "customer_id: message has no key but customer_id is 'c1'; "
     "clicks messages must be keyed by customer_id"),
    ("content keyed by customer", "content", b"c1", pack(CONTENT),
     "content_id: message has key 'c1' but content_id is 'n1'; "
     "content messages must be keyed by content_id"),
    ("unknown field", "clicks", b"c1", pack({**CLICK, "colour": "red"}),
     "colour: unknown field (not in the Clicked contract)"),
    ("unknown nested field", "purchases", b"c1",
     pack({**PURCHASE, "items": [{**ITEM, "colour": "red"}]}),
     "items[0].colour: unknown field (not in the PurchasedItem contract)"),
    ("bad choice", "clicks", b"c1", pack({**CLICK, "channel": "fax"}),
     "channel: 'fax' is not one of email, push, sms, web, app"),
    ("below the minimum", "purchases", b"c1",
     pack({**PURCHASE, "items": [{**ITEM, "quantity": 0}]}),
     "items[0].quantity: 0 is below the minimum 1"),
    ("above the maximum", "profiles", b"c1", pack({**PROFILE, "birth_year": 2101}),
     "birth_year: 2101 is above the maximum 2100"),
    ("empty list", "purchases", b"c1", pack({**PURCHASE, "items": []}),
     "items: must not be empty"),
    ("empty id", "clicks", b"c1", pack({**CLICK, "event_id": ""}),
     "event_id: must not be empty"),
    ("too long", "clicks", b"c1", pack({**CLICK, "event_id": "x" * 201}),
     "event_id: has 201 characters; at most 200 allowed"),
    ("pattern", "purchases", b"c1", pack({**PURCHASE, "currency": "eur"}),
     "currency: 'eur' is not a valid ISO 4217 currency code"),
    ("nested pattern", "content", b"n1",
     pack({**CONTENT, "variants": [{**CONTENT["variants"][0], "language": "DE"}]}),
     "variants[0].language: 'DE' is not a valid ISO 639 language code, lower case"),
    ("time zone", "profiles", b"c1", pack({**PROFILE, "time_zone": "Mars/Olympus"}),
     "time_zone: 'Mars/Olympus' is not an IANA time zone such as Europe/Berlin"),
    ("not a map", "clicks", b"c1", pack([CLICK]), "expected a map of fields, got a list"),
    ("JSON not a map", "clicks", b"c1", b" 42", "expected a map of fields, got a whole number"),
    ("invalid JSON", "clicks", b"c1", b'{"event_id": "e1",}',
     "not valid JSON: Expecting property name enclosed in double quotes: "
     "line 1 column 19 (char 18)"),
    ("invalid msgpack", "clicks", b"c1", b"\xc1",
     "not valid msgpack (invalid type byte); send a msgpack map or a JSON object"),
    ("truncated msgpack", "clicks", b"c1", b"\x92\x01",
     "not valid msgpack (incomplete message); send a msgpack map or a JSON object"),
    ("tombstone", "clicks", b"c1", None, "message has no value (tombstone or empty message)"),
    ("oversize (checked before decoding)", "clicks", b"c1", b"{" + b" " * 65_536,
     "message is 65537 bytes, above the limit of 65536 bytes"),
]


@pytest.mark.parametrize(
    ("topic", "key", "raw", "reason"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_input_gets_an_exact_reason(
    topic: str, key: bytes | None, raw: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        _parse(topic, raw, key)
    assert str(caught.value) == reason
    if caught.value.field is not None:
        assert reason.startswith(f"{caught.value.field}: ")


def test_the_path_names_the_nested_field() -> None:
    raw = pack({**PURCHASE, "items": [ITEM, {**ITEM, "quantity": "2"}]})
    with pytest.raises(InvalidEvent) as caught:
        _parse("purchases", raw)
    assert (caught.value.field, caught.value.problem) == (
        "items[1].quantity", "expected a whole number, got a string"
    )


def test_limits_are_parameters() -> None:
    tight = Limits(max_event_bytes=10)
    with pytest.raises(InvalidEvent, match="above the limit of 10 bytes"):
        parse_message("clicks", b"c1", pack(CLICK), now=NOW, limits=tight)


def test_a_minimal_click_is_accepted_with_defaults() -> None:
    click: Any = _parse("clicks", pack(CLICK))  # Any: Record declares no fields for mypy
    assert (click.customer_id, click.topics, click.channel) == ("c1", [], None)


# --- properties ---------------------------------------------------------------------


@pytest.mark.parametrize("topic", INPUTS)
@given(data=st.data())
def test_every_valid_payload_is_accepted_in_both_encodings(
    topic: str, data: st.DataObject
) -> None:
    payload = data.draw(payloads_for(topic))
    raw = pack(payload) if data.draw(st.booleans()) else json.dumps(payload).encode()
    assert _parse(topic, raw, key_of(topic, payload)) == build_record(topic, payload)


def _as_constructed(record: Record) -> Record:
    """``record`` built again through Faust's own ``__init__`` (nested records too)."""
    def plain(value: Any) -> Any:
        if isinstance(value, Record):
            return _as_constructed(value)
        return [plain(v) for v in value] if isinstance(value, list) else value
    # Read from __dict__: reading an attribute of a lazily coerced field would note it
    # in __evaluated_fields__ and so change the record being compared.
    fields = type(record)._options.fields
    return type(record)(**{name: plain(record.__dict__[name]) for name in fields})


@pytest.mark.parametrize("topic", INPUTS)
@given(data=st.data())
def test_validation_builds_records_exactly_as_their_constructor_does(
    topic: str, data: st.DataObject
) -> None:
    payload = data.draw(payloads_for(topic))
    record = _parse(topic, pack(payload), key_of(topic, payload))
    again = _as_constructed(record)

    def state(r: Any) -> Any:
        return {k: state(v) if isinstance(v, Record) else
                [state(i) if isinstance(i, Record) else i for i in v] if isinstance(v, list)
                else v for k, v in r.__dict__.items()}

    assert list(record.__dict__) == list(again.__dict__)
    assert state(record) == state(again)


_WIRE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)


@pytest.mark.parametrize("topic", INPUTS)
@given(data=st.data())
def test_a_mangled_field_is_an_invalid_event_or_a_record(
    topic: str, data: st.DataObject
) -> None:
    payload = data.draw(payloads_for(topic))
    key = key_of(topic, payload)
    name = data.draw(st.sampled_from([*sorted(payload), "unexpected"]))
    payload[name] = data.draw(_WIRE_VALUES)
    try:
        record = _parse(topic, pack(payload), key)
    except InvalidEvent:
        return
    assert isinstance(record, Record)


@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_are_an_invalid_event_or_a_record(raw: bytes) -> None:
    try:
        record = _parse("clicks", raw)
    except InvalidEvent:
        return
    assert isinstance(record, Record)


# --- hostile inputs that once escaped as exceptions other than InvalidEvent ---------


def test_deeply_nested_json_is_an_invalid_event() -> None:
    raw = b'{"event_id": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        _parse("clicks", raw)


def test_msgpack_map_with_a_list_key_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="not valid msgpack"):
        _parse("clicks", b"\x81\x91\x01\x02")  # {[1]: 2}


def test_a_pattern_must_match_the_whole_value() -> None:
    with pytest.raises(InvalidEvent, match="currency"):
        _parse("purchases", pack({**PURCHASE, "currency": "EUR\n"}))


def test_a_consent_purpose_outside_the_known_ones_is_named_with_its_position() -> None:
    consent = {"event_id": "e1", "customer_id": "c1", "schema_version": 1,
               "occurred_at": "2025-12-01T10:00:00+00:00", "action": "granted",
               "purposes": ["email", "telepathy"], "source": "web form"}
    with pytest.raises(InvalidEvent) as caught:
        parse_message("consents", b"c1", pack(consent), now=NOW)
    assert str(caught.value) == (
        "purposes[1]: 'telepathy' is not one of profiling, personalisation, email, push, sms, web")


def test_a_time_before_1900_is_not_plausible() -> None:
    for when in ("0001-01-01T00:00:00+01:00", "1899-12-31T23:59:59Z"):
        with pytest.raises(InvalidEvent) as caught:
            _parse("clicks", pack({**CLICK, "occurred_at": when}))
        assert str(caught.value) == f"occurred_at: {when!r} is before 1900; not a plausible time"
