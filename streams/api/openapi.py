"""The OpenAPI 3.1 document of the operator API, served at ``/v1/openapi.json``.

Written by hand, so it says what a client needs to know, and held in step
with :data:`streams.api.web.ROUTES` by ``tests/integration/test_operator_api.py``:
the same paths and methods, the same roles (open routes have no security
requirement, the rest name the role they need), and real responses validate
against the schemas below (OpenAPI 3.1 schemas are JSON Schema 2020-12).
"""

from __future__ import annotations

from typing import Any

from streams.api.status import relevanz_version

_ERROR = {"$ref": "#/components/schemas/Error"}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_NUMBER = {"type": ["number", "null"]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_UNAUTHORISED = _json(_ERROR, "Missing or invalid bearer token")
_FORBIDDEN = _json(_ERROR, "The token's role may not do this (operator needed)")
_BAD_INPUT = _json(_ERROR, "Malformed input; the message names the problem")
_TOO_LARGE = _json(_ERROR, "Request body above 16 KiB")
_UNAVAILABLE = _json(_ERROR, "The broker or the store did not answer; nothing changed")


def _viewer(summary: str, ok: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "security": [{"bearer": []}],
            "x-relevanz-role": "viewer",
            "responses": {"200": ok, "401": _UNAUTHORISED, **extra}}


def _operator(summary: str, **extra: Any) -> dict[str, Any]:
    body = {"type": "object", "additionalProperties": False,
            "properties": {"reason": {"type": "string", "maxLength": 500,
                                      "description": "Why; kept with the change"}}}
    return {"summary": summary, "security": [{"bearer": []}],
            "x-relevanz-role": "operator",
            "requestBody": {"required": False,
                            "content": {"application/json": {"schema": body}}},
            "responses": {"200": _json({"$ref": "#/components/schemas/Controls"},
                                       "The pause state after the change"),
                          "400": _BAD_INPUT, "401": _UNAUTHORISED, "403": _FORBIDDEN,
                          "413": _TOO_LARGE, "503": _UNAVAILABLE, **extra}}


def _open(summary: str, ok: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": {"200": ok, **extra}}


_CAMPAIGN = [{"name": "campaign_id", "in": "path", "required": True,
              "schema": {"type": "string", "minLength": 1, "maxLength": 200}}]


def _static(content_type: str) -> dict[str, Any]:
    return {"description": "Static file", "content": {content_type: {}}}


_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "Readiness": {
        "type": "object", "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ready", "not ready"]},
            "checks": {"type": "object",
                       "required": ["worker", "broker", "partitions", "store"],
                       "additionalProperties": {"type": "string"}},
        },
    },
    "Rate": {"type": "object", "required": ["events", "window_s", "per_s"],
             "properties": {"events": {"type": "integer"}, "window_s": {"type": "number"},
                            "per_s": {"type": "number"}}},
    "Partition": {
        "type": "object",
        "required": ["topic", "partition", "end_offset", "committed_offset", "read_offset",
                     "lag"],
        "properties": {
            "topic": {"type": "string"}, "partition": {"type": "integer"},
            "end_offset": _NULLABLE_INT, "committed_offset": _NULLABLE_INT,
            "read_offset": _NULLABLE_INT,
            "lag": {**_NULLABLE_INT,
                    "description": "end_offset - committed_offset (null: end not known yet)"},
        },
    },
    "DeadLetterSample": {
        "type": "object",
        "required": ["received_at", "source_topic", "partition", "offset", "field", "reason",
                     "original_bytes"],
        "properties": {
            "received_at": {"type": "string", "format": "date-time"},
            "source_topic": {"type": "string"}, "partition": {"type": "integer"},
            "offset": {"type": "integer"}, "field": {"type": ["string", "null"]},
            "reason": {"type": "string"},
            "original_bytes": {"type": "integer",
                               "description": "Size of the original message (not shown: it "
                                              "may hold personal data)"},
        },
    },
    "Controls": {
        "type": "object", "required": ["paused", "paused_campaigns", "changes"],
        "properties": {
            "paused": {"type": "boolean", "description": "The kill switch is on"},
            "paused_campaigns": {"type": "array", "items": {"type": "string"}},
            "changes": {"type": "array", "items": {
                "type": "object",
                "required": ["control_id", "paused", "campaign_id", "changed_at", "changed_by",
                             "reason"],
                "properties": {
                    "control_id": {"type": "string"}, "paused": {"type": "boolean"},
                    "campaign_id": {"type": ["string", "null"]},
                    "changed_at": {"type": "string", "format": "date-time"},
                    "changed_by": {"type": "string",
                                   "description": "role:token fingerprint"},
                    "reason": {"type": ["string", "null"]},
                }}},
        },
    },
    "Status": {
        "type": "object",
        "required": ["version", "consumer_group", "ready", "checks", "uptime_s", "partitions",
                     "lag_total", "throughput", "counts", "dead_letters", "store",
                     "interest_tags", "models", "controls"],
        "properties": {
            "version": {"type": "string"},
            "consumer_group": {"type": "string"},
            "ready": {"type": "boolean"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            "uptime_s": {"type": "number"},
            "partitions": {"type": "array",
                           "items": {"$ref": "#/components/schemas/Partition"}},
            "lag_total": _NULLABLE_INT,
            "input_topics": {"type": "array", "items": {"type": "string"}},
            "throughput": {
                "type": "object",
                "description": "Over the trailing 1 and 5 minutes: messages the ingest agent "
                               "consumed, decisions made, send triggers emitted",
                "additionalProperties": {
                    "type": "object", "required": ["1m", "5m"],
                    "properties": {"1m": {"$ref": "#/components/schemas/Rate"},
                                   "5m": {"$ref": "#/components/schemas/Rate"}}},
            },
            "counts": {"type": "object",
                       "required": ["events_in", "applied", "duplicates", "dead_letters",
                                    "decisions", "send_triggers"]},
            "dead_letters": {
                "type": "object", "required": ["total", "by_field", "by_topic", "latest"],
                "properties": {
                    "total": {"type": "integer"},
                    # Keys are the contract's field names, "message" or "other": bounded.
                    "by_field": {"type": "object",
                                 "additionalProperties": {"type": "integer"}},
                    "by_topic": {"type": "object", "additionalProperties": {
                        "type": "object", "additionalProperties": {"type": "integer"}}},
                    "latest": {"type": "array",
                               "items": {"$ref": "#/components/schemas/DeadLetterSample"}},
                },
            },
            "store": {
                "type": "object",
                "required": ["kind", "reachable", "latency_ms", "latency_ms_p50",
                             "latency_ms_max"],
                "properties": {"kind": {"enum": ["embedded", "cassandra"]},
                               "reachable": {"type": "boolean"},
                               "latency_ms": _NULLABLE_NUMBER,
                               "latency_ms_p50": _NULLABLE_NUMBER,
                               "latency_ms_max": _NULLABLE_NUMBER},
            },
            "interest_tags": {
                "type": "object", "required": ["tag_changes", "cached_customers"],
                "properties": {"tag_changes": {"type": "integer"},
                               "cached_customers": {"type": "integer"}},
            },
            "models": {
                "type": "object", "required": ["quality", "drift"],
                "description": "Progressive-validation quality and recent drifts per "
                               "learned model (the content policy)",
                "properties": {"quality": {"type": "array"}, "drift": {"type": "array"},
                               "note": {"type": "string"}},
            },
            "controls": {"oneOf": [{"$ref": "#/components/schemas/Controls"},
                                   {"type": "null"}]},
            "event_time": {
                "description": "The low watermark over the input partitions (the clock of "
                               "examples, decision windows and win-back checks), the newest "
                               "event time read, the partitions with data left that can hold "
                               "the watermark, and the events read dated before it",
                "oneOf": [{"type": "null"}, {
                    "type": "object",
                    "required": ["watermark", "newest", "partitions_behind", "late_events"],
                    "properties": {
                        "watermark": {"type": ["string", "null"], "format": "date-time"},
                        "newest": {"type": ["string", "null"], "format": "date-time"},
                        "partitions_behind": {"type": "integer"},
                        "late_events": {"type": "integer"}}}]},
        },
    },
    "History": {
        "type": "object", "required": ["step_s", "points"],
        "properties": {
            "step_s": {"type": "number"},
            "points": {"type": "array", "items": {
                "type": "object",
                "required": ["at", "events_per_s", "lag", "dead_letters", "tag_changes",
                             "store_latency_ms"],
                "properties": {"at": {"type": "string", "format": "date-time"},
                               "events_per_s": {"type": "number"}, "lag": _NULLABLE_INT,
                               "dead_letters": {"type": "integer"},
                               "tag_changes": {"type": "integer"},
                               "store_latency_ms": _NULLABLE_NUMBER}}},
        },
    },
    "Me": {"type": "object", "required": ["role", "token_fingerprint"],
           "properties": {"role": {"enum": ["viewer", "operator"]},
                          "token_fingerprint": {"type": "string"}}},
    "Decision": {
        "type": "object",
        "required": ["decision_id", "customer_id", "content_id", "variant_language",
                     "language_fallback", "policy", "reasons"],
        "description": "A decision as published on the decisions topic: policy is exploit, "
                       "explore, holdout or neutral (not personalised)",
        "properties": {"policy": {"enum": ["exploit", "explore", "holdout", "neutral"]},
                       "reasons": {"type": "array", "items": {"type": "string"}}},
    },
    "SessionAction": {
        "type": "object",
        "required": ["session_id", "touchpoint", "decided_at", "profile", "content_id",
                     "personalised", "next_pages", "conversion_probability", "reasons"],
        "description": "The next best action for a session: content to offer (null: none "
                       "fits), predicted next pages and the conversion chance with the model "
                       "that made each (next_pages_model: markov-backoff, conversion_model: "
                       "session-conversion, the worker's session models), and the reasons; "
                       "profile says whose (visitor, customer or none)",
        "properties": {"profile": {"enum": ["visitor", "customer", "none"]},
                       "content_id": {"type": ["string", "null"]},
                       "next_pages": {"type": "array", "items": {
                           "type": "object", "required": ["page", "probability"],
                           "properties": {"page": {"type": "string"},
                                          "probability": {"type": "number"}}}},
                       "conversion_probability": {"type": "number"},
                       "reasons": {"type": "array", "items": {"type": "string"}}},
    },
    "Counts": {"type": "object", "required": ["sends", "clicks", "conversions", "revenue"],
               "properties": {"sends": {"type": "integer"}, "clicks": {"type": "integer"},
                              "conversions": {"type": "integer"},
                              "revenue": {"type": "number"}}},
    "Campaign": {
        "type": "object",
        "required": ["campaign_id", "trigger", "channels", "holdout_share", "approval",
                     "paused", "treated", "holdout", "uplift", "variants"],
        "description": "A campaign of the book with its counters from the store; sends of "
                       "the holdout are the sends its customers would have got. uplift: "
                       "per metric (clicks, conversions per exposure; revenue per "
                       "exposure) treated minus holdout with a 95% interval (null until "
                       "both groups have exposures)",
        "properties": {
            "campaign_id": {"type": "string"}, "trigger": {"type": "string"},
            "channels": {"type": "array", "items": {"type": "string"}},
            "holdout_share": {"type": "number"}, "approval": {"type": "boolean"},
            "paused": {"type": "boolean"},
            "treated": {"$ref": "#/components/schemas/Counts"},
            "holdout": {"$ref": "#/components/schemas/Counts"},
            "uplift": {"type": ["object", "null"]},
            "variants": {"type": "object"}},
    },
    "Proposal": {
        "type": "object",
        "required": ["proposal_id", "status", "customer_id", "campaign_id", "channel",
                     "content_id", "send_at", "expires_at", "reasons"],
        "properties": {
            "proposal_id": {"type": "string"},
            "status": {"enum": ["proposed", "approved", "rejected", "expired", "withdrawn"]},
            "customer_id": {"type": "string"}, "campaign_id": {"type": "string"},
            "channel": {"type": "string"}, "content_id": {"type": "string"},
            "send_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "trigger_id": {"type": "string"}, "error": {"type": "string"}},
    },
    "Customer": {
        "type": "object", "required": ["customer_id"],
        "description": "Everything held about the customer: profile, consent, interests "
                       "and tags, purchases, history, pending sends, predictions, the "
                       "latest decisions with their reasons (newest first), ledger event "
                       "ids",
        "properties": {"customer_id": {"type": "string"},
                       "recent_decisions": {"type": "array", "items": {
                           "$ref": "#/components/schemas/Decision"}}},
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Relevanz operator API", "version": relevanz_version(),
                 "description": "Served by every worker. Every route but /health, /ready "
                                "and the dashboard's static files needs a bearer token: "
                                "viewer tokens read, operator tokens also change."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": {**_open_paths(), **_status_paths(), **_customer_paths(),
                  **_decide_paths(), **_control_paths(), **_campaign_paths()},
    }


# The routes, by who calls them: a table each, which the document joins.
def _open_paths() -> dict[str, Any]:
    """Routes anyone may call: liveness, readiness and the dashboard's files."""
    return {
        "/health": {"get": _open("Liveness", _json(
            {"type": "object", "required": ["status"]}, "The process answers"))},
        "/ready": {"get": _open("Readiness", _json(
            {"$ref": "#/components/schemas/Readiness"}, "Ready"),
            **{"503": _json({"$ref": "#/components/schemas/Readiness"},
                            "Not ready; the checks say why")})},
        "/dashboard": {"get": _open("The dashboard page", _static("text/html"))},
        "/dashboard/dashboard.js": {"get": _open("The dashboard's script",
                                                   _static("application/javascript"))},
        "/dashboard/dashboard.css": {"get": _open("The dashboard's style sheet",
                                                    _static("text/css"))},
    }


def _status_paths() -> dict[str, Any]:
    """What a viewer reads: who they are, status, history, trends, metrics."""
    return {
        "/v1/me": {"get": _viewer("The role of the presented token", _json(
            {"$ref": "#/components/schemas/Me"}, "The role"))},
        "/v1/status": {"get": _viewer("Worker status", _json(
            {"$ref": "#/components/schemas/Status"}, "The status"))},
        "/v1/history": {"get": _viewer("Recent history for charts", _json(
            {"$ref": "#/components/schemas/History"}, "Points, oldest first"))},
        "/v1/trends": {"get": _viewer(
            "Campaign uplift on each campaign's goal (with its 95% interval) and model "
            "quality, every 15 s over the last 2 hours; the models' recent drifts", _json(
                {"type": "object", "required": ["step_s", "points", "drift"],
                 "properties": {
                     "step_s": {"type": "number"},
                     "points": {"type": "array", "items": {
                         "type": "object", "required": ["at", "models", "campaigns"],
                         "properties": {
                             "at": {"type": "string", "format": "date-time"},
                             "models": {"type": "array", "items": {"type": "object"}},
                             "campaigns": {"type": "array", "items": {
                                 "type": "object",
                                 "required": ["campaign_id", "goal", "sends",
                                              "held_out", "difference", "low",
                                              "high"]}}}}},
                     "drift": {"type": "array", "items": {"type": "object"}}}},
                "Points, oldest first"))},
        "/metrics": {"get": _viewer("Prometheus metrics", {
            "description": "Prometheus text format 0.0.4",
            "content": {"text/plain": {}}})},
        "/v1/openapi.json": {"get": _viewer("This document", _json(
            {"type": "object"}, "OpenAPI 3.1"))},
    }


def _customer_paths() -> dict[str, Any]:
    """One customer: the view, the erasure request and a decision now."""
    return {
        "/v1/customers/{customer_id}": {"get": {
            **_viewer("Everything held about one customer", _json(
                {"$ref": "#/components/schemas/Customer"}, "The customer"),
                **{"400": _BAD_INPUT, "404": _json(_ERROR, "Nothing held"),
                   "503": _UNAVAILABLE}),
            "parameters": [{"name": "customer_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1,
                                       "maxLength": 200}},
                           {"name": "as_of", "in": "query", "required": False,
                            "description": "Answer the predictions as of this time "
                                           "(ISO 8601 with an offset; default now)",
                            "schema": {"type": "string", "format": "date-time"}}],
        }},
        "/v1/customers/{customer_id}/erasure": {"post": {
            "summary": "Request the erasure of one customer: a consents event with "
                       "action erasure_requested, applied as any erasure",
            "security": [{"bearer": []}], "x-relevanz-role": "operator",
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": {"type": "object", "additionalProperties": False}}}},
            "responses": {
                "202": _json({"type": "object",
                              "required": ["customer_id", "event_id", "requested_at"],
                              "properties": {
                                  "customer_id": {"type": "string"},
                                  "event_id": {"type": "string"},
                                  "requested_at": {"type": "string",
                                                   "format": "date-time"}}},
                             "The request is on the consents topic"),
                "400": _BAD_INPUT, "401": _UNAUTHORISED, "403": _FORBIDDEN,
                "413": _TOO_LARGE, "503": _UNAVAILABLE},
            "parameters": [{"name": "customer_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1,
                                       "maxLength": 200}}],
        }},
    }


def _decide_paths() -> dict[str, Any]:
    """Decide now: content for a customer's channel and slot, or a session's next step."""
    return {
        "/v1/decide": {"post": {
            **_viewer("Choose content for a customer, channel and slot now, or the next "
                      "best action for a session", _json(
                {"oneOf": [{"$ref": "#/components/schemas/Decision"},
                           {"$ref": "#/components/schemas/SessionAction"}]},
                "The decision, or the session's next best action, with reasons"),
                **{"400": _BAD_INPUT, "404": _json(_ERROR, "No item fits"),
                   "503": _UNAVAILABLE}),
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"oneOf": [
                    {"type": "object", "additionalProperties": False,
                     "required": ["customer_id", "channel", "slot"],
                     "properties": {
                         "customer_id": {"type": "string", "minLength": 1, "maxLength": 200},
                         "channel": {"type": "string",
                                     "enum": ["email", "push", "sms", "web", "app"]},
                         "slot": {"type": "string", "minLength": 1, "maxLength": 200}}},
                    # A session: the answer is a SessionAction.
                    {"type": "object", "additionalProperties": False,
                     "required": ["session_id", "touchpoint"],
                     "properties": {k: {"type": "string", "minLength": 1, "maxLength": 200}
                                    for k in ("visitor_id", "customer_id", "session_id",
                                              "touchpoint")}}]}}}},
        }},
    }


def _control_paths() -> dict[str, Any]:
    """The kill switch and the pause of one campaign."""
    return {
        "/v1/controls": {"get": _viewer("Pause state", _json(
            {"$ref": "#/components/schemas/Controls"}, "The state"))},
        "/v1/controls/pause": {"post": _operator(
            "Kill switch on: no send trigger goes out from any worker")},
        "/v1/controls/resume": {"post": _operator("Kill switch off")},
        "/v1/controls/campaigns/{campaign_id}/pause": {"post": {
            **_operator("Pause one campaign"), "parameters": _CAMPAIGN}},
        "/v1/controls/campaigns/{campaign_id}/resume": {"post": {
            **_operator("Resume one campaign"), "parameters": _CAMPAIGN}},
    }


def _campaign_paths() -> dict[str, Any]:
    """Campaigns with their uplift, and the proposals awaiting a person."""
    return {
        "/v1/campaigns": {"get": _viewer(
            "Every campaign with its counts and uplift over its holdout", _json(
                {"type": "object", "required": ["campaigns"], "properties": {
                    "campaigns": {"type": "array", "items": {
                        "$ref": "#/components/schemas/Campaign"}}}}, "The campaigns"),
            **{"503": _UNAVAILABLE})},
        "/v1/campaigns/{campaign_id}": {"get": {
            **_viewer("One campaign's definition, counts per variant and uplift", _json(
                {"$ref": "#/components/schemas/Campaign"}, "The campaign"),
                **{"400": _BAD_INPUT, "404": _json(_ERROR, "No such campaign"),
                   "503": _UNAVAILABLE}),
            "parameters": _CAMPAIGN}},
        "/v1/proposals": {"get": {
            **_viewer("Send proposals, newest first (open ones past their time are "
                      "expired first)", _json(
                {"type": "object", "required": ["proposals"], "properties": {
                    "proposals": {"type": "array", "items": {
                        "$ref": "#/components/schemas/Proposal"}}}}, "The proposals"),
                **{"400": _BAD_INPUT, "503": _UNAVAILABLE}),
            "parameters": [
                {"name": "status", "in": "query", "required": False,
                 "schema": {"enum": ["proposed", "approved", "rejected", "expired",
                                     "withdrawn"]}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                            "default": 100}}]}},
        "/v1/proposals/{proposal_id}/approve": {"post": _resolution(
            "Approve a proposal: exactly one send trigger goes out (409: already "
            "resolved, expired, sends paused, or consent no longer allows it)")},
        "/v1/proposals/{proposal_id}/reject": {"post": _resolution(
            "Reject a proposal: nothing is sent (409: already resolved or expired)")},
    }


def _resolution(summary: str) -> dict[str, Any]:
    body = {"type": "object", "additionalProperties": False,
            "properties": {"reason": {"type": "string", "maxLength": 500,
                                      "description": "Why; kept with the proposal"}}}
    proposal = {"$ref": "#/components/schemas/Proposal"}
    return {"summary": summary, "security": [{"bearer": []}], "x-relevanz-role": "operator",
            "parameters": [{"name": "proposal_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
            "requestBody": {"required": False,
                            "content": {"application/json": {"schema": body}}},
            "responses": {"200": _json(proposal, "The proposal after the decision"),
                          "400": _BAD_INPUT, "401": _UNAUTHORISED, "403": _FORBIDDEN,
                          "404": _json(_ERROR, "No such proposal"),
                          "409": _json(proposal, "Nothing changed; error says why"),
                          "413": _TOO_LARGE, "503": _UNAVAILABLE}}
