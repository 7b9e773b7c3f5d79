"""JSON Schema and AsyncAPI documents generated from the records.

Upstream teams build against these files, so they are derived from the one
source of truth (the record annotations in :mod:`schemas.records`, the rules
in :mod:`schemas.constraints`, the table in :mod:`schemas.topics`) and kept in
the tree under ``schemas/exported/``; CI fails when they are stale::

    python -m schemas.export            # (re)write schemas/exported/
    python -m schemas.export --check    # exit 1 naming stale files

One JSON Schema (draft 2020-12) per topic and record version
(``clicks.v1.schema.json``) and one AsyncAPI 3.0 document (``asyncapi.json``)
describing every topic, and the schema of a customer's data export
(:mod:`schemas.customer_export`).  Output is deterministic: sorted keys, two-space
indent, trailing newline.

>>> schema_file_name("clicks", 1)
'clicks.v1.schema.json'
>>> json_schema("clicks", 1)["$id"]
'urn:relevanz:schema:clicks:v1'
>>> json_schema("clicks", 1)["properties"]["schema_version"]
{'type': 'integer', 'description': 'version of this contract', 'const': 1}
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import types
import typing
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas.constraints import Rule, constraints_of
from schemas.customer_export import CUSTOMER_EXPORT_FILE, customer_export_schema
from schemas.records import Record
from schemas.topics import INPUT_TOPICS, TOPICS, TopicContract

EXPORT_DIR = Path(__file__).parent / "exported"
ASYNCAPI_FILE = "asyncapi.json"
#: Version of the AsyncAPI document as a whole; bump it when a contract changes.
DOCUMENT_VERSION = "1.1.0"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: What a payload schema is, in AsyncAPI's multi-format terms.
_SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
_KAFKA_BINDING = "0.5.0"
#: RFC 3339 with an offset, as Python's ``datetime.fromisoformat`` reads it
#: (upper-case ``T`` and ``Z``, ASCII digits), so the schema never accepts what
#: ingest refuses, even where a validator treats ``format`` as a mere annotation.
_DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
#: W3C Trace Context on every message: what ingest reads from an input and
#: writes on each output the input caused (``streams/tracing.py``).
_TRACE_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "traceparent": {
            "type": "string",
            "pattern": r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C traceparent. On an input, optional: without a valid one "
                           "the event starts a new trace. On an output, always set: the "
                           "trace of the input that caused it.",
        },
        "tracestate": {
            "type": "string",
            "maxLength": 512,
            "description": "W3C tracestate, passed on with its traceparent.",
        },
    },
}
_PREFIX_NOTE = (
    "The address is the logical topic name; on the broker it carries the "
    "deployment's configured topic prefix."
)


def schema_file_name(topic: str, version: int) -> str:
    """File name of the JSON Schema of one topic version."""
    return f"{topic}.v{version}.schema.json"


def schema_id(topic: str, version: int) -> str:
    """The ``$id`` of one topic version's schema (a URN, not a web address).

    >>> schema_id("send-triggers", 1)
    'urn:relevanz:schema:send-triggers:v1'
    """
    return f"urn:relevanz:schema:{topic}:v{version}"


def render(document: dict[str, Any]) -> str:
    """The canonical text of a document: sorted keys, two-space indent, newline.

    >>> render({"b": [1], "a": "ü"})
    '{\\n  "a": "ü",\\n  "b": [\\n    1\\n  ]\\n}\\n'
    """
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- JSON Schema ------------------------------------------------------------


def json_schema(topic: str, version: int) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``topic``'s record ``version``."""
    record_type = TOPICS[topic].versions[version]
    defs: dict[str, Any] = {}
    schema = _object_schema(record_type, defs)
    schema["properties"]["schema_version"]["const"] = version
    schema.update(
        {
            "$schema": _DRAFT,
            "$id": schema_id(topic, version),
            "title": f"{record_type.__name__} ({topic} v{version})",
        }
    )
    if defs:
        schema["$defs"] = defs
    return schema


def _object_schema(record_type: type[Record], defs: dict[str, Any]) -> dict[str, Any]:
    options = record_type._options
    rules = constraints_of(record_type)
    properties: dict[str, Any] = {}
    for name, annotation in options.fields.items():
        where = f"{record_type.__name__}.{name}"
        prop = field_schema(annotation, rules.get(name), defs, where)
        if name in options.defaults:
            prop["default"] = options.defaults[name]
        properties[name] = prop
    if "schema_version" in properties:
        # The version is a constant per schema (set by the caller), not a range.
        for bound in ("minimum", "maximum"):
            properties["schema_version"].pop(bound, None)
    return {
        "type": "object",
        "description": inspect.cleandoc(record_type.__doc__ or record_type.__name__),
        "properties": properties,
        "required": [n for n in options.fields if n not in options.defaults],
        "additionalProperties": False,
    }


def field_schema(
    annotation: Any, rule: Rule | None, defs: dict[str, Any], where: str = "field"
) -> dict[str, Any]:
    """The schema of one field from its annotation and rule.

    Nested records are added to ``defs`` and referenced.

    >>> field_schema(list[str], Rule(min_length=1), {})
    {'type': 'array', 'items': {'type': 'string'}, 'minItems': 1}
    >>> field_schema(typing.Optional[str], Rule(choices=("a",)), {})
    {'anyOf': [{'type': 'string', 'enum': ['a']}, {'type': 'null'}]}
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        schema = field_schema(inner, rule, defs, where)
        if isinstance(schema.get("type"), str) and not {"enum", "const"} & schema.keys():
            schema["type"] = [schema["type"], "null"]
            return schema
        return {"anyOf": [schema, {"type": "null"}]}
    schema = _type_schema(annotation, defs, where)
    if rule is not None:
        _add_rule(schema, rule, where)
    return schema


def _type_schema(annotation: Any, defs: dict[str, Any], where: str) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return {"type": "array", "items": field_schema(item, None, defs, where + "[]")}
    if origin is dict:
        _, value = typing.get_args(annotation)
        return {
            "type": "object",
            "additionalProperties": field_schema(value, None, defs, where + "{}"),
        }
    if isinstance(annotation, type) and issubclass(annotation, Record):
        name = annotation.__name__
        if name not in defs:
            defs[name] = {}  # placeholder first: a record may nest itself
            defs[name] = _object_schema(annotation, defs)
        return {"$ref": f"#/$defs/{name}"}
    scalars: dict[Any, dict[str, Any]] = {
        str: {"type": "string"},
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        datetime: {
            "type": "string",
            "format": "date-time",
            "pattern": _DATE_TIME_PATTERN,
            "description": "RFC 3339 time with a time zone offset, "
            "such as 2026-03-01T09:30:00+01:00",
        },
        bytes: {
            "type": "string",
            "contentEncoding": "base64",
            "description": "raw bytes: base64 in JSON; on the msgpack wire a bin value",
        },
    }
    if annotation not in scalars:
        raise TypeError(f"{where}: no JSON Schema for {annotation!r}")  # a contract bug
    return dict(scalars[annotation])


def _add_rule(schema: dict[str, Any], rule: Rule, where: str) -> None:
    kind = schema.get("type")
    if rule.choices is not None:
        _require(kind == "string", "choices", where)
        schema["enum"] = list(rule.choices)
    if rule.min_value is not None or rule.max_value is not None:
        _require(kind in ("integer", "number"), "a value range", where)
        for keyword, bound in (("minimum", rule.min_value), ("maximum", rule.max_value)):
            if bound is not None:
                schema[keyword] = int(bound) if kind == "integer" else bound
    if rule.min_length is not None or rule.max_length is not None:
        _require(kind in ("string", "array", "object"), "a length", where)
        unit = {"string": "Length", "array": "Items", "object": "Properties"}[str(kind)]
        for keyword, length in (("min", rule.min_length), ("max", rule.max_length)):
            if length is not None:
                schema[keyword + unit] = length
    if rule.pattern is not None:
        _require(kind == "string", "a pattern", where)
        schema["pattern"] = rule.pattern
    if rule.format is not None:
        # Not a standard format: validators treat it as an annotation, ingest checks it.
        schema["format"] = rule.format
    if rule.description is not None:
        schema["description"] = rule.description
    if rule.items is not None:
        _require(kind in ("array", "object"), "an item rule", where)
        if kind == "array":
            _add_rule(schema["items"], rule.items, where + "[]")
        else:  # a map: the rule of its values
            _add_rule(schema["additionalProperties"], rule.items, where + "{}")


def _require(ok: bool, what: str, where: str) -> None:
    if not ok:
        raise TypeError(f"{where}: {what} does not apply to this field's type")


# --- AsyncAPI ---------------------------------------------------------------


def _message_name(contract: TopicContract, version: int, content_type: str) -> str:
    name = f"{contract.versions[version].__name__}V{version}"
    return name + "Json" if content_type == "application/json" else name


def _content_types(contract: TopicContract) -> tuple[str, ...]:
    # Ingest accepts JSON on input topics; everything Relevanz writes is msgpack.
    if contract in INPUT_TOPICS:
        return ("application/msgpack", "application/json")
    return ("application/msgpack",)


def _key_binding(contract: TopicContract) -> dict[str, Any]:
    if contract.key is None:
        return {
            "description": "the original message's key, unchanged (may be absent)",
        }
    return {
        "type": "string",
        "description": f"the payload's {contract.key} as UTF-8 bytes",
    }


def _partitioning(contract: TopicContract) -> str:
    if contract.partitioning is not None:
        return contract.partitioning
    if contract.compacted:
        return (
            f"compacted, keyed by {contract.key}: the latest record per key is "
            "the current state; every worker reads the whole topic"
        )
    if contract.customer_keyed:
        return (
            "keyed by customer_id and co-partitioned with every other "
            "customer-keyed topic (same partition count)"
        )
    return "keyed by the original message's key; not co-partitioned"


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document describing every topic in :data:`TOPICS`."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for contract in TOPICS.values():
        channel_messages: dict[str, Any] = {}
        for version, record_type in sorted(contract.versions.items()):
            for content_type in _content_types(contract):
                name = _message_name(contract, version, content_type)
                messages[name] = {
                    "name": name,
                    "title": f"{record_type.__name__} v{version} ({content_type})",
                    "summary": inspect.cleandoc(record_type.__doc__ or "").split("\n")[0],
                    "contentType": content_type,
                    "headers": _TRACE_HEADERS,
                    "payload": {
                        "schemaFormat": _SCHEMA_FORMAT,
                        "schema": {"$ref": schema_file_name(contract.name, version)},
                    },
                    "bindings": {
                        "kafka": {"key": _key_binding(contract), "bindingVersion": _KAFKA_BINDING}
                    },
                }
                channel_messages[name] = {"$ref": f"#/components/messages/{name}"}
        channels[contract.name] = {
            "address": contract.name,
            "title": contract.name,
            "description": f"{contract.description} {_PREFIX_NOTE}",
            "messages": channel_messages,
            "bindings": {
                "kafka": {
                    "topicConfiguration": {
                        "cleanup.policy": ["compact" if contract.compacted else "delete"]
                    },
                    "bindingVersion": _KAFKA_BINDING,
                }
            },
            "x-key": contract.key,
            "x-partitioning": _partitioning(contract),
            "x-producers": list(contract.producers),
            "x-consumers": list(contract.consumers),
        }
        action = "receive" if contract in INPUT_TOPICS else "send"
        operations[f"{action}-{contract.name}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{contract.name}"},
            "messages": [
                {"$ref": f"#/channels/{contract.name}/messages/{name}"}
                for name in channel_messages
            ],
            "description": (
                f"Produced by {', '.join(contract.producers)}; "
                f"consumed by {', '.join(contract.consumers)}."
            ),
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Relevanz event contracts",
            "version": DOCUMENT_VERSION,
            "description": (
                "Every Kafka topic Relevanz reads or writes. Values are msgpack maps "
                "(application/msgpack); ingest also accepts JSON objects on input "
                "topics. Times are RFC 3339 strings with an offset. Every event names "
                "its schema_version; a breaking change gets a new version. "
                + _PREFIX_NOTE
            ),
        },
        "defaultContentType": "application/msgpack",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


# --- files and CLI ----------------------------------------------------------


def documents() -> dict[str, str]:
    """Every exported file name and its text."""
    files = {
        schema_file_name(contract.name, version): render(json_schema(contract.name, version))
        for contract in TOPICS.values()
        for version in sorted(contract.versions)
    }
    files[ASYNCAPI_FILE] = render(asyncapi())
    files[CUSTOMER_EXPORT_FILE] = render(customer_export_schema())
    return files


def _ours(directory: Path) -> set[str]:
    """Files in ``directory`` that this module owns."""
    if not directory.is_dir():
        return set()
    return {p.name for p in directory.glob("*.schema.json")} | (
        {ASYNCAPI_FILE} if (directory / ASYNCAPI_FILE).exists() else set()
    )


def stale(directory: Path = EXPORT_DIR) -> list[str]:
    """Names of files that are missing, different or no longer generated."""
    expected = documents()
    names = sorted(expected.keys() | _ours(directory))
    return [
        name
        for name in names
        if name not in expected
        or not (directory / name).exists()
        or (directory / name).read_text(encoding="utf-8") != expected[name]
    ]


def write(directory: Path = EXPORT_DIR) -> list[str]:
    """Bring ``directory`` in step with the code; return the names changed."""
    changed = stale(directory)
    expected = documents()
    directory.mkdir(parents=True, exist_ok=True)
    for name in changed:
        if name in expected:
            (directory / name).write_text(expected[name], encoding="utf-8")
        else:
            (directory / name).unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Write the exports, or with ``--check`` report stale ones (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files are stale"
    )
    parser.add_argument("--dir", type=Path, default=EXPORT_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        names = stale(args.dir)
        if names:
            print(
                f"stale exports in {args.dir}: {', '.join(names)}; "
                "run python -m schemas.export",
                file=sys.stderr,
            )
            return 1
        return 0
    for name in write(args.dir):
        print(f"wrote {args.dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
