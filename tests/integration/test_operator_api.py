"""The operator API of a real worker on the embedded broker, driven over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from referencing import Registry, Resource

from agents.pipeline import campaign_rows
from schemas.codec import decode, pack
from schemas.records import SendProposed
from schemas.topics import INPUT_TOPICS
from streams.api.auth import Role
from streams.api.openapi import document
from streams.api.web import MAX_BODY_BYTES, ROUTES, bound_port, build_api, serve, serve_for_demo
from streams.app import Worker, build_worker, utc_now
from streams.broker import EmbeddedBroker
from streams.controls import Controls
from streams.privacy import export_customer
from streams.settings import Settings
from tests import events
from tests.harness import (
    consume_all,
    consume_exactly,
    eventually,
    eventually_async,
    isolated_settings,
)
from tests.integration.conftest import stop_or_explain

#: Run against the embedded broker and Apache Kafka (tests/conftest.py).
pytestmark = pytest.mark.brokers("tansu", "kafka")

OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789ab"


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    # Campaign reports only when a test asks (test_campaign_stats_are_reported_periodically).
    return isolated_settings(broker.bootstrap_servers, tmp_path, web_port=0,
                             operator_tokens=(OPERATOR,), viewer_tokens=(VIEWER,),
                             campaign_stats_interval_s=86400.0)


class Api:
    """A client of one worker's API."""

    def __init__(self, base: str, session: aiohttp.ClientSession):
        self.base = base
        self.session = session

    async def call(self, method: str, path: str, token: str | None = None,
                   headers: dict[str, str] | None = None, **kwargs: Any
                   ) -> tuple[int, Any, aiohttp.ClientResponse]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=sent,
                                        **kwargs) as response:
            text = await response.text()
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return response.status, body, response

    async def get(self, path: str, token: str | None = VIEWER) -> Any:
        status, body, _ = await self.call("GET", path, token)
        assert status == 200, (path, status, body)
        return body


@pytest.fixture
async def api(worker: Worker) -> AsyncIterator[Api]:
    runner = await serve(build_api(worker), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            client = Api(f"http://127.0.0.1:{bound_port(runner)}", session)
            await _until_ready(client)
            yield client
    finally:
        await stop_or_explain(runner.cleanup(), "the API to stop")


async def _until_ready(client: Api) -> None:
    async def ready() -> bool:
        status, _, _ = await client.call("GET", "/ready")
        return status == 200

    await eventually_async(ready, 60, "the worker to be ready", poll_s=0.2)


def _concrete(path: str) -> str:
    return (path.replace("{customer_id}", "c1").replace("{campaign_id}", "spring")
            .replace("{proposal_id}", "p1"))


# --- security -----------------------------------------------------------------


async def test_every_protected_route_refuses_requests_without_a_valid_token(api: Api) -> None:
    protected = [r for r in ROUTES if r.role is not None]
    assert len(protected) >= 10
    for route in protected:
        path = _concrete(route.path)
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": f"Basic {VIEWER}"},
                        {"Authorization": f"bearer{OPERATOR}"},
                        {"Authorization": f"Bearer {OPERATOR[:-1]}"}):
            status, body, response = await api.call(route.method, path, headers=headers)
            assert status == 401, (route, headers, status)
            assert body == {"error": "missing or invalid bearer token"}
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        if route.role is Role.OPERATOR:
            status, body, _ = await api.call(route.method, path, VIEWER)
            assert (status, body) == (403, {"error": "this needs the operator role"}), route
    # Unknown paths are no way to probe the route table either.
    status, _, _ = await api.call("GET", "/v1/secret-route")
    assert status == 401
    status, _, _ = await api.call("GET", "/v1/secret-route", VIEWER)
    assert status == 404


async def test_open_routes_need_no_token(api: Api) -> None:
    for route in ROUTES:
        if route.role is None:
            status, _, response = await api.call(route.method, route.path)
            assert status == 200, route
            if route.path.startswith("/dashboard"):
                assert "default-src 'none'" in response.headers["Content-Security-Policy"]


async def test_the_route_table_is_what_the_server_serves(worker: Worker) -> None:
    served = {(r.method, r.resource.canonical) for r in build_api(worker).router.routes()
              if r.resource is not None}
    assert served == {(r.method, r.path) for r in ROUTES}


async def test_malformed_input_is_a_clear_400_and_large_bodies_a_413(api: Api) -> None:
    cases = [
        (b"{not json", "body is not valid JSON"),
        (b"[1, 2]", 'body must be a JSON object such as {"reason": "..."}'),
        (json.dumps({"why": "x"}).encode(), "unknown field 'why'; allowed: reason"),
        (json.dumps({"reason": 7}).encode(), "reason: expected a string"),
        (json.dumps({"reason": "x" * 501}).encode(), "reason: at most 500 characters, got 501"),
        (b"[" * 5000, "body is nested too deeply"),
        (b'{"reason": "\\ud800"}', "body holds text that is not valid Unicode"),
    ]
    for body, message in cases:
        status, answer, _ = await api.call("POST", "/v1/controls/pause", OPERATOR, data=body)
        assert status == 400
        assert answer["error"].startswith(message)
    status, answer, _ = await api.call("POST", "/v1/controls/pause", OPERATOR,
                                       data=b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert status == 413
    assert answer == {"error": f"request body above the limit of {MAX_BODY_BYTES} bytes"}
    status, answer, _ = await api.call("GET", "/v1/customers/" + "x" * 201, VIEWER)
    assert (status, answer) == (400, {"error": "customer_id: expected 1 to 200 printable "
                                               "characters"})
    assert (await api.get("/v1/controls"))["paused"] is False  # nothing changed


# --- the OpenAPI document ----------------------------------------------------------


async def test_an_over_long_request_line_is_refused_without_logging_its_bytes(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    port = int(api.base.rsplit(":", 1)[1])
    private = "customer-0123456789-private"
    line = f"GET /v1/customers/{private}?{'x' * 9000} HTTP/1.1\r\nHost: a\r\n\r\n"
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(line.encode())
        await writer.drain()
        answer = await reader.read(200)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.1)
    assert answer.split(b" ")[1] == b"400"
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert refused, "the refusal is logged"
    assert "bytes not logged" in refused[0].getMessage()
    assert private not in caplog.text


async def test_openapi_describes_exactly_the_routes_and_their_roles(api: Api) -> None:
    doc = await api.get("/v1/openapi.json")
    described = {(method.upper(), path) for path, item in doc["paths"].items()
                 for method in item}
    assert described == {(r.method, r.path) for r in ROUTES}
    for route in ROUTES:
        operation = doc["paths"][route.path][route.method.lower()]
        if route.role is None:
            assert operation["security"] == []
        else:
            assert operation["security"] == [{"bearer": []}]
            assert operation["x-relevanz-role"] == route.role.value
            assert "401" in operation["responses"]


def _validator(name: str) -> jsonschema.protocols.Validator:
    doc = document()
    registry: Registry[Any] = Registry().with_resource(
        "urn:relevanz:openapi", Resource.from_contents(
            {"$schema": "https://json-schema.org/draft/2020-12/schema", **doc}))
    schema = {"$ref": f"urn:relevanz:openapi#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


# --- status, lag and throughput against known counts ---------------------------------


def _click(event_id: str, customer: str, at: datetime | None = None) -> bytes:
    return events.click(event_id, customer, at=at or datetime.now(UTC) - timedelta(days=1),
                        topics=["fashion"])[2]


def _produce(settings: Settings, messages: list[tuple[str, bytes, bytes]]
             ) -> dict[tuple[str, int], int]:
    """Publish; returns how many messages each (logical topic, partition) received."""
    producer = Producer({"bootstrap.servers": settings.broker_servers, "acks": "all"})
    landed: dict[tuple[str, int], int] = {}

    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        key = (message.topic().removeprefix(settings.topic_prefix), message.partition())
        landed[key] = landed.get(key, 0) + 1

    for topic, key, value in messages:
        producer.produce(settings.topic(topic), key=key, value=value, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    return landed


def _by_partition(status: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(p["topic"], p["partition"]): p for p in status["partitions"]}


async def test_lag_and_throughput_match_what_the_worker_processed(
    api: Api, worker: Worker, settings: Settings
) -> None:
    # One event time for all: until a partition's end offset is known the clock may run
    # ahead of it (README, "Event time"), so clicks microseconds apart could count late.
    at = datetime.now(UTC) - timedelta(days=1)
    first = [("clicks", f"c{i % 23}".encode(), _click(f"e{i}", f"c{i % 23}", at))
             for i in range(240)]
    first += [("clicks", b"c1", b"\xc1 not msgpack")] * 10
    landed = _produce(settings, first)
    await eventually(lambda: worker.accounting.events_in >= 250, 60, "250 events")

    async def settled() -> bool:
        status = await api.get("/v1/status")
        rows = _by_partition(status)
        return all(rows[tp]["committed_offset"] == n for tp, n in landed.items())

    await eventually_async(settled, 30, "offsets committed", poll_s=0.3)
    status = await api.get("/v1/status")
    _validator("Status").validate(status)
    rows = _by_partition(status)
    assert len(rows) == settings.partitions * len(INPUT_TOPICS)  # every input partition
    for (topic, partition), row in rows.items():
        produced = landed.get((topic, partition), 0)
        assert (row["end_offset"], row["lag"]) == (produced, 0), (topic, partition, row)
    assert status["lag_total"] == 0
    ingest = status["throughput"]["ingest"]
    for window in ("1m", "5m"):
        assert ingest[window]["events"] == 250
        # Both are rounded (2 and 3 decimals): compare with a matching tolerance.
        assert ingest[window]["per_s"] == pytest.approx(250 / ingest[window]["window_s"],
                                                        rel=2e-3)
    assert status["counts"]["events_in"] == 250
    assert status["dead_letters"]["total"] == 10
    assert status["ready"] is True
    assert status["controls"] == {"paused": False, "paused_campaigns": [], "changes": []}
    # Every partition read to its end: the event-time clock is the newest time read.
    clock = status["event_time"]
    assert clock["watermark"] is not None
    assert clock["watermark"] == clock["newest"]
    assert (clock["partitions_behind"], clock["late_events"]) == (0, 0)

    # Hold the store's write lock: the worker cannot finish a batch, so nothing more
    # is committed and the lag is exactly what arrives meanwhile.
    blocker = sqlite3.connect(settings.store_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        second = [("clicks", f"d{i % 7}".encode(), _click(f"f{i}", f"d{i % 7}"))
                  for i in range(70)]
        more = _produce(settings, second)

        async def lagging() -> bool:
            rows = _by_partition(await api.get("/v1/status"))
            return all(rows[tp]["lag"] == n for tp, n in more.items())

        await eventually_async(lagging, 30, "the lag of the held-back events", poll_s=0.3)
        status = await api.get("/v1/status")
        assert status["lag_total"] == 70
        assert status["counts"]["events_in"] == 250
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    async def caught_up() -> bool:
        status = await api.get("/v1/status")
        return status["lag_total"] == 0 and status["counts"]["events_in"] == 320

    await eventually_async(caught_up, 60, "the worker to catch up", poll_s=0.3)
    status = await api.get("/v1/status")
    assert status["throughput"]["ingest"]["1m"]["events"] == 320

    metrics = await api.call("GET", "/metrics", VIEWER)
    text = metrics[1]
    assert metrics[0] == 200
    assert 'relevanz_events_total{outcome="applied"} 310.0' in text
    assert 'relevanz_events_total{outcome="dead_letter"} 10.0' in text
    assert 'relevanz_consumer_lag{partition="0",topic="clicks"} 0.0' in text
    assert "relevanz_ready 1.0" in text
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"relevanz_events", "relevanz_consumer_lag", "relevanz_batch_seconds",
            "relevanz_store_latency_seconds", "relevanz_paused"} <= families

    async def charted() -> bool:
        return bool((await api.get("/v1/history"))["points"])

    await eventually_async(charted, 15, "a history point (one every 5 s)", poll_s=0.5)
    history = await api.get("/v1/history")
    _validator("History").validate(history)
    assert history["points"][-1]["dead_letters"] == 10

    async def sampled() -> bool:
        latest = (await api.get("/v1/status"))["dead_letters"]["latest"]
        return len(latest) == 10

    await eventually_async(sampled, 30, "dead-letter samples", poll_s=0.5)
    sample = (await api.get("/v1/status"))["dead_letters"]["latest"][0]
    assert sample["source_topic"] == "clicks"
    assert sample["reason"].startswith("not valid msgpack")
    assert sample["original_bytes"] == len(b"\xc1 not msgpack")


async def test_ready_reports_each_check(api: Api) -> None:
    status, body, _ = await api.call("GET", "/ready")
    assert status == 200
    _validator("Readiness").validate(body)
    assert body["checks"]["broker"] == "reachable"
    assert body["checks"]["store"] == "reachable"
    assert body["checks"]["partitions"] == f"{4 * len(INPUT_TOPICS)} assigned"
    status, body, response = await api.call("GET", "/v1/controls/pause", OPERATOR)
    assert (status, body["error"], response.headers["Allow"]) == (405, "Method Not Allowed",
                                                                  "POST")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await api.get("/v1/me")) == {"role": "viewer", "token_fingerprint": "18dc1384"}


# --- controls ----------------------------------------------------------------------


async def test_pause_and_resume_reach_every_worker_and_survive_a_restart(
    api: Api, worker: Worker, settings: Settings
) -> None:
    # Another worker's controls, following the same topic.
    other = Controls(settings, utc_now)
    await other.start()
    try:
        status, body, _ = await api.call("POST", "/v1/controls/pause", OPERATOR,
                                         json={"reason": "wrong prices in the newsletter"})
        assert status == 200
        _validator("Controls").validate(body)
        assert body["paused"] is True
        assert body["changes"][0]["changed_by"].startswith("operator:")
        assert body["changes"][0]["reason"] == "wrong prices in the newsletter"
        assert worker.controls is not None
        assert worker.controls.paused
        assert worker.controls.campaign_paused("anything")
        await eventually(lambda: other.paused, 30, "the pause to reach the other worker")

        status, body, _ = await api.call("POST", "/v1/controls/campaigns/spring/pause",
                                         OPERATOR)
        assert (status, body["paused_campaigns"]) == (200, ["spring"])
        status, body, _ = await api.call("POST", "/v1/controls/resume", OPERATOR)
        assert (status, body["paused"]) == (200, False)
        assert worker.controls.campaign_paused("spring")
        assert not worker.controls.campaign_paused("summer")
        await eventually(lambda: not other.paused and other.paused_campaigns == {"spring"},
                         30, "resume and the campaign pause to reach the other worker")
    finally:
        await other.stop()

    # A worker starting now reads the state before it does anything.
    late = Controls(settings, utc_now)
    await late.start()
    try:
        assert (late.paused, late.paused_campaigns) == (False, {"spring"})
    finally:
        await late.stop()
    status, body, _ = await api.call("POST", "/v1/controls/campaigns/spring/resume", OPERATOR)
    assert (status, body["paused_campaigns"]) == (200, [])
    assert (await api.get("/v1/status"))["controls"]["paused"] is False


async def test_trends_hold_campaign_uplift_and_model_quality_over_time(
        api: Api, worker: Worker) -> None:
    async def sampled() -> bool:
        return bool((await api.get("/v1/trends"))["points"])

    await eventually_async(sampled, 30, "a first trend point", poll_s=0.5)
    trends = await api.get("/v1/trends")
    assert trends["step_s"] == 15
    point = trends["points"][0]
    datetime.fromisoformat(point["at"])
    assert [c["campaign_id"] for c in point["campaigns"]] == [
        c.campaign_id for c in worker.campaigns.campaigns]
    assert {"goal", "sends", "held_out", "difference", "low", "high"} <= set(
        point["campaigns"][0])
    assert "content-policy" in [m["model"] for m in point["models"]]
    assert trends["drift"] == []


# --- the customer view -------------------------------------------------------------


async def test_customer_view_shows_what_is_held(api: Api, worker: Worker,
                                                settings: Settings) -> None:
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    profile = pack({"event_id": "p1", "customer_id": "c-42", "schema_version": 1,
                    "occurred_at": at, "locale": "de-DE", "language": "de",
                    "time_zone": "Europe/Berlin"})
    consent = pack({"event_id": "k1", "customer_id": "c-42", "schema_version": 1,
                    "occurred_at": at, "action": "granted",
                    "purposes": ["profiling", "email"], "source": "preference-centre"})
    _produce(settings, [("profiles", b"c-42", profile), ("consents", b"c-42", consent),
                        ("clicks", b"c-42", _click("e1", "c-42"))])
    await eventually(lambda: worker.accounting.applied >= 3, 60, "3 events applied")

    async def held() -> bool:
        status, _, _ = await api.call("GET", "/v1/customers/c-42", VIEWER)
        return status == 200

    await eventually_async(held, 30, "the customer to be stored", poll_s=0.5)
    customer = await api.get("/v1/customers/c-42")
    _validator("Customer").validate(customer)
    assert customer["customer_id"] == "c-42"
    text = json.dumps(customer)
    assert "de-DE" in text
    assert "email" in text
    status, body, _ = await api.call("GET", "/v1/customers/nobody", VIEWER)
    assert (status, body) == (404, {"error": "nothing is held about this customer"})
    # Predictions as of a time asked for (relevanz evaluate --through-worker reads them so).
    asked = "1997-10-01T00:00:00+00:00"
    then = await api.get("/v1/customers/c-42?as_of=" + asked.replace("+", "%2B"))
    assert then["predictions"]["as_of"] == asked
    status, body, _ = await api.call("GET", "/v1/customers/c-42?as_of=yesterday", VIEWER)
    assert status == 400
    assert "as_of 'yesterday' is not an ISO 8601 time" in body["error"]


async def test_an_operator_requests_an_erasure_and_the_worker_erases(
        api: Api, worker: Worker, settings: Settings) -> None:
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    consent = pack({"event_id": "k1", "customer_id": "c-gone", "schema_version": 1,
                    "occurred_at": at, "action": "granted",
                    "purposes": ["profiling", "email"], "source": "preference-centre"})
    _produce(settings, [("consents", b"c-gone", consent),
                        ("clicks", b"c-gone", _click("e1", "c-gone"))])

    async def held() -> bool:
        status, _, _ = await api.call("GET", "/v1/customers/c-gone", VIEWER)
        return status == 200

    await eventually_async(held, 30, "the customer to be stored", poll_s=0.5)
    status, _, _ = await api.call("POST", "/v1/customers/c-gone/erasure", VIEWER)
    assert status == 403  # viewers read; only operators erase
    status, body, _ = await api.call("POST", "/v1/customers/c-gone/erasure", OPERATOR,
                                     json={"why": "x"})
    assert (status, body["error"]) == (400, "unknown field 'why'; allowed: ")
    status, body, _ = await api.call("POST", "/v1/customers/c-gone/erasure", OPERATOR)
    assert (status, body["customer_id"]) == (202, "c-gone")
    (request,) = [decode(m.value()) for m in consume_exactly(settings, "consents", 2)
                  if decode(m.value())["action"] == "erasure_requested"]
    assert (request["event_id"], request["legal_basis"]) == (body["event_id"],
                                                             "legal_obligation")

    async def gone() -> bool:
        status, _, _ = await api.call("GET", "/v1/customers/c-gone", VIEWER)
        return status == 404

    await eventually_async(gone, 30, "the worker to erase the customer", poll_s=0.5)
    (erased,) = consume_exactly(settings, "customer-erased", 1)
    assert decode(erased.value())["customer_id"] == "c-gone"



async def test_decide_answers_with_a_decision_and_respects_consent(
        api: Api, worker: Worker, settings: Settings) -> None:
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    item = pack({"event_id": "i1", "content_id": "n1", "schema_version": 1,
                 "occurred_at": at, "topics": ["fashion"], "channels": ["web"],
                 "slots": ["web-banner"], "default_language": "de",
                 "variants": [{"language": "de", "title": "Mode", "url": "https://shop.example"}]})
    no = pack({"event_id": "k1", "customer_id": "c-no", "schema_version": 1,
               "occurred_at": at, "action": "revoked", "purposes": ["personalisation"],
               "source": "preference-centre"})
    _produce(settings, [("content", b"n1", item), ("consents", b"c-no", no),
                        ("clicks", b"c-yes", _click("e1", "c-yes"))])
    await eventually(lambda: worker.accounting.applied >= 3, 60, "3 events applied")

    ask = {"customer_id": "c-no", "channel": "web", "slot": "web-banner"}
    status, decision, _ = await api.call("POST", "/v1/decide", VIEWER, json=ask)
    assert status == 200, decision
    _validator("Decision").validate(decision)
    assert (decision["content_id"], decision["policy"]) == ("n1", "neutral")
    assert decision["reasons"][-1] == "consent: no personalisation, so not personalised"
    status, decision, _ = await api.call("POST", "/v1/decide", VIEWER,
                                         json={**ask, "customer_id": "c-yes"})
    assert status == 200, decision
    assert decision["policy"] in ("exploit", "explore", "holdout")
    assert decision["reasons"][-1] == "consent: personalisation and profiling granted"
    assert worker.accounting.decisions >= 2

    # The customer view shows the decision with its reasons (written after the answer).
    async def shown() -> bool:
        status, held, _ = await api.call("GET", "/v1/customers/c-yes", VIEWER)
        return status == 200 and bool(held["recent_decisions"])

    await eventually_async(shown, 10, "the decision in the customer view", poll_s=0.1)
    held = await api.get("/v1/customers/c-yes")
    (latest,) = [d for d in held["recent_decisions"]
                 if d["decision_id"] == decision["decision_id"]]
    assert latest["reasons"] == decision["reasons"]
    assert latest["content_id"] == decision["content_id"]
    status, body, _ = await api.call("POST", "/v1/decide", VIEWER,
                                     json={**ask, "slot": "app-card"})
    assert (status, body) == (404, {"error": "no catalogue item fits this channel and slot now"})
    status, body, _ = await api.call("POST", "/v1/decide", VIEWER,
                                     json={**ask, "channel": "fax"})
    assert status == 400
    assert body["error"].startswith("channel: expected one of")


async def test_decide_for_an_unknown_or_erased_customer_stores_and_publishes_nothing(
        api: Api, worker: Worker, settings: Settings) -> None:
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    item = pack({"event_id": "i1", "content_id": "n1", "schema_version": 1,
                 "occurred_at": at, "topics": ["fashion"], "channels": ["web"],
                 "slots": ["web-banner"], "default_language": "de",
                 "variants": [{"language": "de", "title": "Mode", "url": "https://shop.example"}]})
    erase = pack({"event_id": "k9", "customer_id": "erin", "schema_version": 1,
                  "occurred_at": datetime.now(UTC).isoformat(), "action": "erasure_requested",
                  "purposes": [], "source": "preference-centre"})
    _produce(settings, [("content", b"n1", item), ("clicks", b"erin", _click("e1", "erin"))])
    await eventually(lambda: worker.accounting.applied >= 2, 60, "the item and the click")
    assert await export_customer(worker.store, "erin", utc_now()) is not None
    _produce(settings, [("consents", b"erin", erase)])
    await eventually(lambda: worker.accounting.erasures == 1, 60, "the erasure")
    assert await export_customer(worker.store, "erin", utc_now()) is None
    decisions_before = worker.accounting.decisions

    for who in ("erin", "made-up-1", "made-up-2"):
        status, decision, _ = await api.call(
            "POST", "/v1/decide", VIEWER,
            json={"customer_id": who, "channel": "web", "slot": "web-banner"})
        assert status == 200, decision
        assert (decision["content_id"], decision["policy"]) == ("n1", "neutral")
    await asyncio.sleep(0.5)  # a background write would have landed by now
    for who in ("erin", "made-up-1", "made-up-2"):
        assert await export_customer(worker.store, who, utc_now()) is None, who
    assert worker.accounting.decisions == decisions_before
    published = [decode(m.value()) for m in consume_all(settings, "decisions")]
    assert not [d for d in published if d["customer_id"] in ("erin", "made-up-1", "made-up-2")]


# --- the demo's announcement ---------------------------------------------------------


async def test_the_demo_makes_tokens_only_when_none_are_configured(worker: Worker) -> None:
    said: list[str] = []
    runner = await serve_for_demo(worker, said.append)  # tokens configured: not printed
    await runner.cleanup()
    assert len(said) == 1
    assert said[0].startswith("dashboard: http://127.0.0.1:")
    assert OPERATOR not in said[0]
    assert VIEWER not in said[0]

    worker.settings = worker.settings.with_(operator_tokens=(), viewer_tokens=())
    said.clear()
    runner = await serve_for_demo(worker, said.append)
    try:
        lines = dict(line.split(": ", 1) for line in said)
        operator, viewer = lines["operator token"], lines["viewer token"]
        assert lines["dashboard"].endswith(f"/dashboard#token={operator}")
        async with aiohttp.ClientSession() as session:
            client = Api(lines["dashboard"].split("/dashboard")[0], session)
            await _until_ready(client)
            assert (await client.get("/v1/me", operator))["role"] == "operator"
            assert (await client.get("/v1/me", viewer))["role"] == "viewer"
    finally:
        await runner.cleanup()


async def test_ready_turns_503_while_the_store_is_gone(api: Api, worker: Worker) -> None:
    await worker.store.close()

    async def refused() -> bool:
        status, body, _ = await api.call("GET", "/ready")
        return status == 503 and body["checks"]["store"].startswith("not reachable")

    await eventually_async(refused, 15, "/ready to report the store", poll_s=0.3)
    status = await api.get("/v1/status")
    assert (status["ready"], status["store"]["reachable"]) == (False, False)
    await worker.store.open()
    await _until_ready(api)


# --- campaigns and proposals -----------------------------------------------------


def _proposed(proposal_id: str, expires_in: timedelta) -> SendProposed:
    now = utc_now().replace(microsecond=0)
    return SendProposed(
        proposal_id=proposal_id, idempotency_key=f"spring:{proposal_id}", customer_id="ann",
        created_at=now, expires_at=now + expires_in, schema_version=1,
        send_at=now + timedelta(hours=2), channel="email", campaign_id="interest-follow-up",
        content_id="golf-1", variant_language="de", reasons=["tag golf-fans assigned"],
        caused_by="e-1")


async def test_a_proposal_is_approved_once_and_yields_exactly_one_trigger(
        api: Api, worker: Worker, settings: Settings) -> None:
    await worker.store.put_proposals([
        campaign_rows.stored(_proposed("p-approve", timedelta(hours=1))),
        campaign_rows.stored(_proposed("p-reject", timedelta(hours=1))),
        campaign_rows.stored(_proposed("p-late", timedelta(seconds=-1)))])
    listed = await api.get("/v1/proposals?status=proposed")
    assert sorted(p["proposal_id"] for p in listed["proposals"]) == ["p-approve", "p-reject"]
    assert listed["proposals"][0]["reasons"] == ["tag golf-fans assigned"]
    # Listing expired the late one: it is on record.
    (late,) = (await api.get("/v1/proposals?status=expired"))["proposals"]
    assert late["proposal_id"] == "p-late"

    status, body, _ = await api.call("POST", "/v1/proposals/p-approve/approve", VIEWER)
    assert status == 403  # viewers cannot approve
    status, body, _ = await api.call("POST", "/v1/proposals/p-approve/approve", OPERATOR)
    assert (status, body["status"], body["trigger_id"]) == (200, "approved", "p-approve")
    again, body, _ = await api.call("POST", "/v1/proposals/p-approve/approve", OPERATOR)
    assert again == 409
    assert "already approved" in body["error"]
    status, _, _ = await api.call("POST", "/v1/proposals/p-approve/reject", OPERATOR)
    assert status == 409
    status, body, _ = await api.call("POST", "/v1/proposals/p-reject/reject", OPERATOR,
                                     json={"reason": "wrong season"})
    assert (status, body["status"], body["note"]) == (200, "rejected", "wrong season")
    status, _, _ = await api.call("POST", "/v1/proposals/p-reject/approve", OPERATOR)
    assert status == 409
    status, _, _ = await api.call("POST", "/v1/proposals/nobody/approve", OPERATOR)
    assert status == 404
    status, body, _ = await api.call("GET", "/v1/proposals?status=maybe", VIEWER)
    assert status == 400
    assert "status" in body["error"]

    (trigger,) = [decode(m.value()) for m in consume_exactly(settings, "send-triggers", 1)]
    assert trigger["trigger_id"] == "p-approve"
    assert trigger["idempotency_key"] == "spring:p-approve"
    resolutions = sorted((decode(m.value())["proposal_id"], decode(m.value())["status"])
                         for m in consume_exactly(settings, "proposal-resolutions", 3))
    assert resolutions == [("p-approve", "approved"), ("p-late", "expired"),
                           ("p-reject", "rejected")]
    # The send counts for its campaign, as a treated exposure.
    campaign = await api.get("/v1/campaigns/interest-follow-up")
    assert campaign["treated"]["sends"] == 1
    assert campaign["approval"] is False
    assert campaign["paused"] is False
    # The periodic report carries the same counts, for every campaign of the book.
    await worker.report_campaigns()
    reports = {r["campaign_id"]: r for r in (
        decode(m.value()) for m in consume_exactly(settings, "campaign-stats", 4))}
    assert reports["interest-follow-up"]["sends_treated"] == 1
    assert reports["interest-follow-up"]["click_uplift"] is None  # no holdout exposure yet
    assert reports["browse-abandonment"]["sends_treated"] == 0
    every = await api.get("/v1/campaigns")
    assert "interest-follow-up" in [c["campaign_id"] for c in every["campaigns"]]
    status, _, _ = await api.call("GET", "/v1/campaigns/no-such-campaign", VIEWER)
    assert status == 404


async def test_nothing_is_approved_while_sends_are_paused(api: Api, worker: Worker) -> None:
    await worker.store.put_proposals([
        campaign_rows.stored(_proposed("p-paused", timedelta(hours=1)))])
    status, _, _ = await api.call("POST", "/v1/controls/pause", OPERATOR)
    assert status == 200
    status, body, _ = await api.call("POST", "/v1/proposals/p-paused/approve", OPERATOR)
    assert status == 409
    assert "paused" in body["error"]
    assert body["status"] == "proposed"
    status, _, _ = await api.call("POST", "/v1/controls/resume", OPERATOR)
    status, body, _ = await api.call("POST", "/v1/proposals/p-paused/approve", OPERATOR)
    assert (status, body["status"]) == (200, "approved")


async def test_campaign_stats_are_reported_periodically(settings: Settings) -> None:
    often = build_worker(settings.with_(campaign_stats_interval_s=0.2,
                                        consumer_group=settings.consumer_group + "-often"))
    await often.start()
    try:
        await eventually(lambda: often.accounting.campaign_reports >= 8, 30,
                         "two rounds of campaign reports")
    finally:
        await stop_or_explain(often.stop(), "the worker to stop")



async def test_status_shows_the_session_models_scored_on_page_views(
        api: Api, worker: Worker, settings: Settings) -> None:
    start = datetime.now(UTC) - timedelta(days=1)
    pages = ["home", "category", "product", "cart", "checkout", "confirmation"]
    views = []
    for visitor in range(3):
        for i, page in enumerate(pages):
            payload = {"event_id": f"pv-{visitor}-{i}", "visitor_id": f"v{visitor}",
                       "schema_version": 1, "session_id": f"s{visitor}",
                       "occurred_at": (start + timedelta(minutes=visitor * 10 + i)).isoformat(),
                       "url": f"https://shop.example/{page}", "page_type": page,
                       "device": "desktop", "consent": ["personalisation"]}
            views.append(("page_views", f"v{visitor}".encode(), pack(payload)))
    _produce(settings, views)
    await eventually(lambda: worker.accounting.events_in >= len(views), 60, "the page views")
    status = await api.get("/v1/status")
    _validator("Status").validate(status)
    quality = {q["model"]: q for q in status["models"]["quality"]}
    assert quality["next-page"]["examples"] == 3 * (len(pages) - 1)
    assert quality["next-page"]["hit3"] is not None
    # Each visitor reached confirmation: the predictions before it were scored.
    assert quality["session-conversion"]["examples"] == 3 * (len(pages) - 1)
    assert quality["session-remaining-time"]["examples"] == 3 * (len(pages) - 1)
