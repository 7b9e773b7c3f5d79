"""The format of a customer's data export (GDPR Art. 15): ``relevanz customer export``.

What a person or a data-protection officer receives is a contract like any
topic's record, so it is versioned and described by a JSON Schema exported
with the others (``schemas/exported/customer-export.v1.schema.json``).  The
export carries ``format_version``; a change that could break a reader of the
file gets a new version, and every object in the schema is closed
(``additionalProperties: false``), so a field added to the customer state
without a schema change fails the test that validates a real export.

>>> customer_export_schema()["$id"]
'urn:relevanz:schema:customer-export:v1'
>>> customer_export_schema()["properties"]["format_version"]
{'const': 1, 'description': 'version of this export format'}
"""

from __future__ import annotations

from typing import Any

#: The version of the export format an export names in ``format_version``.
CUSTOMER_EXPORT_VERSION = 1
CUSTOMER_EXPORT_FILE = f"customer-export.v{CUSTOMER_EXPORT_VERSION}.schema.json"

_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_TIME = {"type": "string", "format": "date-time",
         "description": "ISO 8601 time with a time zone offset"}
_STRING = {"type": "string"}
_NUMBER = {"type": "number"}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(description: str, **properties: dict[str, Any]) -> dict[str, Any]:
    # Every field of the customer state is always present (null when unknown).
    return {"type": "object", "description": description, "properties": properties,
            "required": sorted(properties), "additionalProperties": False}


def _map(description: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "description": description, "additionalProperties": values}


def _list(description: str, items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": items}


def customer_export_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one customer's export."""
    schema = _object(
        "Everything Relevanz holds about one customer, as `relevanz customer export` "
        "and `GET /v1/customers/{id}` return it.",
        format_version={"const": CUSTOMER_EXPORT_VERSION,
                        "description": "version of this export format"},
        exported_at={**_TIME, "description": "when the export was made"},
        customer_id=_STRING,
        master=_null(_object(
            "Master data from the latest profile updates",
            locale=_STRING, language=_STRING, time_zone=_STRING, updated_at=_TIME,
            country=_null(_STRING), birth_year=_null({"type": "integer"}),
            gender=_null(_STRING), attributes=_map("Free CRM attributes", _STRING))),
        consent=_map("The latest decision per purpose", _object(
            "One consent decision", granted={"type": "boolean"}, at=_TIME, source=_STRING,
            legal_basis=_STRING,
            earlier=_list("Earlier decisions about the purpose, oldest first, as "
                          "[time, granted]", {"type": "array", "prefixItems": [
                              _TIME, {"type": "boolean"}], "minItems": 2, "maxItems": 2}))),
        interests=_map("Interest per topic", _object(
            "A decaying interest score", score=_NUMBER, scored_at=_TIME,
            recent=_list("Times of the recent signals", _TIME))),
        tags=_map("Assigned interest tags", _object(
            "Why and when a tag was assigned", topic=_STRING, assigned_at=_TIME,
            caused_by=_STRING)),
        purchases=_object(
            "Purchase figures", orders={"type": "integer"}, revenue=_NUMBER,
            first_at=_null(_TIME), last_at=_null(_TIME)),
        history=_list("Interactions, oldest first", _object(
            "One interaction", occurred_at=_TIME, event_id=_STRING,
            kind={"type": "string", "description": "click, purchase, decision or trigger"},
            content_id=_null(_STRING), campaign_id=_null(_STRING),
            amount=_null(_NUMBER))),
        last_event_at=_null(_TIME),
        pending=_list("Scheduled sends not yet due", _object(
            "A pending send", trigger_id=_STRING, idempotency_key=_STRING, channel=_STRING,
            send_at=_TIME, campaign_id=_STRING, content_id=_STRING)),
        predictions=_null(_object(
            "Predictions as of `at` (profiling)", purchase=_NUMBER, churn=_NUMBER,
            best_hour=_null({"type": "integer"}), at=_TIME,
            hours=_map("Engagement share per hour of day (keys 0 to 23)", _NUMBER),
            hours_at=_null(_TIME), units={"type": "integer"},
            as_of={**_TIME, "description": "the time purchase and churn are answered for"})),
        parked=_list("Clicks and purchases consent did not allow at their time, kept "
                     "until an earlier-dated consent allows them (as they arrived)",
                     {"type": "object"}),
        recent_decisions=_list(
            "The latest decisions about the customer, newest first, as published",
            {"$ref": "urn:relevanz:schema:decisions:v1"}),
        ledger_event_ids=_list("Ids of the events the ledger remembers", _STRING),
    )
    return {"$schema": _DRAFT, "$id": "urn:relevanz:schema:customer-export:v1",
            "title": f"Customer export (v{CUSTOMER_EXPORT_VERSION})", **schema}
