"""The exported JSON Schema and AsyncAPI files are in step with the records.

Three promises to upstream teams: the committed files are what the code
generates; each schema is a valid draft 2020-12 schema; and a schema and the
ingest validator agree — every valid payload passes both, every payload
broken in a typical way (a field removed, a wrong type, a broken rule, an
unknown field, a naive time) fails both.
"""

from __future__ import annotations

import base64
import json
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from schemas import export
from schemas.codec import to_wire
from schemas.constraints import Rule, constraints_of
from schemas.errors import InvalidEvent
from schemas.records import Record
from schemas.topics import INPUT_TOPICS, OUTPUT_TOPICS, TOPICS
from schemas.validation import build
from tests.strategies import build_record, payloads_for, records_for

INPUTS = [t.name for t in INPUT_TOPICS]
OUTPUTS = [t.name for t in OUTPUT_TOPICS]
SCHEMA_FILES = [
    export.schema_file_name(t.name, v) for t in TOPICS.values() for v in sorted(t.versions)
]


def _committed(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((export.EXPORT_DIR / name).read_text(encoding="utf-8"))
    return loaded


VALIDATORS = {
    name: Draft202012Validator(_committed(name), format_checker=FormatChecker())
    for name in SCHEMA_FILES
}


def _validator(topic: str, version: int = 1) -> Draft202012Validator:
    return VALIDATORS[export.schema_file_name(topic, version)]


def _ingest_accepts(topic: str, payload: dict[str, Any]) -> bool:
    try:
        build(TOPICS[topic].versions[1], payload)
    except InvalidEvent:
        return False
    return True


# --- in step -----------------------------------------------------------------


def test_committed_exports_are_what_the_code_generates() -> None:
    assert export.stale() == [], "exports are stale: run python -m schemas.export"


def test_check_names_stale_missing_and_extra_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "clicks.v1.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "asyncapi.json").unlink()
    (tmp_path / "clicks.v0.schema.json").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()

    assert export.main(["--check", "--dir", str(tmp_path)]) == 1

    message = capsys.readouterr().err
    assert message.count("\n") == 1
    assert "asyncapi.json, clicks.v0.schema.json, clicks.v1.schema.json;" in message
    assert export.write(tmp_path) == [
        "asyncapi.json", "clicks.v0.schema.json", "clicks.v1.schema.json"
    ]
    assert export.stale(tmp_path) == []


def test_files_are_rendered_deterministically() -> None:
    for name, text in export.documents().items():
        assert text == export.render(json.loads(text)), name
        assert text.endswith("}\n")
        assert '\n  "' in text


# --- valid schemas ---------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_each_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = _committed(name)
    Draft202012Validator.check_schema(schema)
    topic = name.split(".v")[0]
    assert schema["$id"] == export.schema_id(topic, 1)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["schema_version"]["const"] == 1


def test_nested_records_optional_fields_and_rules_are_written_out() -> None:
    purchases = _committed("purchases.v1.schema.json")
    assert purchases["properties"]["items"]["items"] == {"$ref": "#/$defs/PurchasedItem"}
    assert purchases["$defs"]["PurchasedItem"]["required"] == [
        "product_id", "quantity", "unit_price"
    ]
    clicks = _committed("clicks.v1.schema.json")["properties"]
    assert clicks["content_id"]["type"] == ["string", "null"]
    assert clicks["channel"]["anyOf"][0]["enum"] == ["email", "push", "sms", "web", "app"]
    assert clicks["occurred_at"]["format"] == "date-time"
    dead = _committed("dead-letters.v1.schema.json")["properties"]["original"]
    assert dead["contentEncoding"] == "base64"
    assert "bin" in dead["description"]


# --- agreement with the validator -------------------------------------------------


@pytest.mark.parametrize("topic", INPUTS)
@given(data=st.data())
def test_valid_payloads_pass_schema_and_validator(topic: str, data: st.DataObject) -> None:
    payload = data.draw(payloads_for(topic))
    _validator(topic).validate(payload)
    record: Any = build_record(topic, payload)  # Any: Record declares no fields for mypy
    assert record.schema_version == 1


@pytest.mark.parametrize("topic", OUTPUTS)
@given(data=st.data())
def test_output_records_in_json_form_pass_their_schema(topic: str, data: st.DataObject) -> None:
    record = data.draw(records_for(topic))
    wire = {
        k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
        for k, v in to_wire(record).items()
    }
    _validator(topic).validate(wire)


_WRONG_TYPE: dict[Any, Any] = {str: 7, int: "7", float: "7.5", bool: "yes", datetime: 20260101}


def _required_type(annotation: Any) -> Any:
    """``X`` for ``X | None`` (either spelling), else the annotation itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def _wrong(annotation: Any) -> Any:
    annotation = _required_type(annotation)
    if typing.get_origin(annotation) is list:
        return "not a list"
    if typing.get_origin(annotation) is dict:
        return ["not", "a", "map"]
    if isinstance(annotation, type) and issubclass(annotation, Record):
        return "not a map"
    return _WRONG_TYPE[annotation]


def mutations(record_type: type[Record], payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """Typical ways a producer breaks ``payload``, each as (what, broken payload)."""
    options = record_type._options
    rules = constraints_of(record_type)
    broken: list[tuple[str, Any]] = [("unknown field", {**payload, "unexpected": 1})]
    for name, annotation in options.fields.items():
        if name not in options.defaults:
            broken.append((f"{name} removed", {k: v for k, v in payload.items() if k != name}))
        broken.append((f"{name} of a wrong type", {**payload, name: _wrong(annotation)}))
        if _required_type(annotation) is datetime:
            broken.append((f"{name} naive", {**payload, name: "2025-06-01T12:00:00"}))
        rule = rules.get(name)
        if rule is not None and name != "schema_version":
            for what, value in _rule_breakers(rule, annotation):
                broken.append((f"{name} {what}", {**payload, name: value}))
        args = typing.get_args(annotation)
        nested = args[0] if typing.get_origin(annotation) is list else None
        if isinstance(nested, type) and issubclass(nested, Record) and payload.get(name):
            for what, item in mutations(nested, payload[name][0]):
                broken.append((f"{name}[0] {what}", {**payload, name: [item]}))
    return broken


def _rule_breakers(rule: Rule, annotation: Any) -> list[tuple[str, Any]]:
    is_list = typing.get_origin(annotation) is list
    found: list[tuple[str, Any]] = []
    if rule.choices is not None:
        found.append(("a bad choice", "not-a-choice"))
    if rule.pattern is not None:
        found.append(("breaking the pattern", "!"))
    if rule.min_length:
        found.append(("too short", [] if is_list else ""))
    if rule.max_length is not None:
        found.append(("too long", ["x"] * (rule.max_length + 1) if is_list
                      else "x" * (rule.max_length + 1)))
    if rule.min_value is not None:
        found.append(("below the minimum", int(rule.min_value) - 1))
    if rule.max_value is not None:
        found.append(("above the maximum", int(rule.max_value) + 1))
    return found


@pytest.mark.parametrize("topic", INPUTS)
@given(data=st.data())
def test_broken_payloads_fail_schema_and_validator_alike(topic: str, data: st.DataObject) -> None:
    payload = data.draw(payloads_for(topic))
    for what, broken in mutations(TOPICS[topic].record, payload):
        in_schema = _validator(topic).is_valid(broken)
        in_ingest = _ingest_accepts(topic, broken)
        assert (in_schema, in_ingest) == (False, False), what


# --- AsyncAPI ----------------------------------------------------------------------


def test_asyncapi_names_every_topic_with_its_key_and_schema() -> None:
    doc = _committed("asyncapi.json")
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == set(TOPICS)
    for name, contract in TOPICS.items():
        channel = doc["channels"][name]
        assert channel["address"] == name
        assert channel["x-key"] == contract.key
        assert channel["x-producers"] == list(contract.producers)
        assert "prefix" in channel["description"]
        for ref in channel["messages"].values():
            message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
            schema_file = message["payload"]["schema"]["$ref"]
            assert (export.EXPORT_DIR / schema_file).exists()
            if contract.key is not None:
                assert contract.key in message["bindings"]["kafka"]["key"]["description"]


def test_asyncapi_content_types_and_operations() -> None:
    doc = _committed("asyncapi.json")
    for name, contract in TOPICS.items():
        types_ = {
            doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]["contentType"]
            for ref in doc["channels"][name]["messages"].values()
        }
        expected = {"application/msgpack"}
        if contract in INPUT_TOPICS:
            expected.add("application/json")
        assert types_ == expected, name
        action = "receive" if contract in INPUT_TOPICS else "send"
        operation = doc["operations"][f"{action}-{name}"]
        assert operation["channel"] == {"$ref": f"#/channels/{name}"}
        for ref in operation["messages"]:
            assert ref["$ref"].rsplit("/", 1)[1] in doc["channels"][name]["messages"]


def test_asyncapi_declares_the_trace_headers_ingest_writes() -> None:
    import re

    from streams.tracing import TraceContext

    doc = _committed("asyncapi.json")
    written = dict(TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True,
                                b"vendor=1").headers())
    for name, message in doc["components"]["messages"].items():
        headers = message["headers"]["properties"]
        assert set(headers) == {"traceparent", "tracestate"}, name
        assert re.fullmatch(headers["traceparent"]["pattern"], written["traceparent"].decode())
        assert not re.fullmatch(headers["traceparent"]["pattern"], "00-xyz-00f067aa0ba902b7-01")
        assert len(written["tracestate"]) <= headers["tracestate"]["maxLength"]
