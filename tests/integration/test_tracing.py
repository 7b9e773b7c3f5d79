"""W3C trace context across the Kafka hop, and spans over OTLP: a real worker,
the embedded broker and store, and a real OTLP/HTTP receiver.

A click's ``traceparent`` reaches the decision, send trigger and interest
tag change it causes (and the dead letter of a malformed message); a click
without one, or with a malformed one, starts a new trace; with an OTLP
endpoint the batch's steps arrive at the collector as spans.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from confluent_kafka import KafkaError, Message, Producer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from schemas.codec import decode, pack
from streams.api.web import bound_port, build_api, serve
from streams.app import Worker, build_worker
from streams.broker import EmbeddedBroker
from streams.settings import Settings
from streams.tracing import STEPS, TraceContext, parse_traceparent
from tests.harness import consume_all, consume_exactly, eventually, isolated_settings
from tests.integration.conftest import stop_or_explain

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

ITEM = ("content", b"golf-1", pack({
    "event_id": "i1", "content_id": "golf-1", "schema_version": 1,
    "occurred_at": (BASE - timedelta(hours=10)).isoformat(),
    "topics": ["sports"], "channels": ["email"], "slots": ["follow-up"],
    "variants": [{"language": "de", "title": "Golfreise", "url": "https://shop.example/g"}],
    "default_language": "de"}))

#: A message to produce: (logical topic, key, value, headers).
Produced = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def click(event_id: str, customer: str, minutes: float,
          headers: list[tuple[str, bytes]] | None = None) -> Produced:
    return ("clicks", customer.encode(), pack({
        "event_id": event_id, "customer_id": customer, "schema_version": 1,
        "occurred_at": (BASE + timedelta(minutes=minutes)).isoformat(),
        "content_id": "golf-1"}), headers or [])


def traceparent(trace_id: str, span_id: str = "00f067aa0ba902b7") -> list[tuple[str, bytes]]:
    return [("traceparent", f"00-{trace_id}-{span_id}-01".encode())]


def produce(settings: Settings, messages: list[Produced]) -> None:
    """Publish messages with their headers, as an upstream system would."""
    producer = Producer({"bootstrap.servers": settings.broker_servers, "acks": "all"})
    refused: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            refused.append(error.str())

    for topic, key, value, headers in messages:
        producer.produce(settings.topic(topic), key=key, value=value, headers=headers,
                         on_delivery=delivered)
    assert producer.flush(30) == 0, "messages left unconfirmed"
    assert not refused, refused


def context_of(message: Message) -> TraceContext:
    """The trace context a published message carries (failing if it has none)."""
    headers = dict(message.headers() or [])
    context = parse_traceparent(headers.get("traceparent"))
    assert context is not None, f"no valid traceparent on {message.topic()}: {headers}"
    return context


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    # One campaign without a holdout group: every allowed follow-up is sent.
    book = tmp_path / "campaigns.toml"
    book.write_text('[[campaigns]]\nid = "interest-follow-up"\ntrigger = "tag_assigned"\n'
                    'channels = ["email"]\n', encoding="utf-8")
    return isolated_settings(broker.bootstrap_servers, tmp_path, campaigns_path=str(book))


async def clicks_applied(worker: Worker, settings: Settings, clicks: list[Produced]) -> None:
    produce(settings, [(*ITEM, [])])
    await eventually(lambda: worker.accounting.events_in >= 1, 60, "the catalogue item")
    produce(settings, clicks)
    await eventually(lambda: worker.accounting.events_in >= 1 + len(clicks), 60, "the clicks")


async def test_a_decision_and_its_send_trigger_carry_the_trace_of_the_click_behind_them(
        worker: Worker, settings: Settings) -> None:
    traces = {"a1": "1" * 32, "a2": "2" * 32, "a3": "3" * 32}
    await clicks_applied(worker, settings, [
        click(event_id, "alice", minutes, traceparent(trace_id))
        for minutes, (event_id, trace_id) in enumerate(traces.items())]
        + [("clicks", b"alice", b"\xc1 not msgpack", traceparent("d" * 32))])

    (decision,) = consume_exactly(settings, "decisions", 1)
    (trigger,) = consume_exactly(settings, "send-triggers", 1)
    cause = decode(decision.value())["caused_by"]
    assert cause in traces, f"the decision names {cause!r}, not one of the clicks"
    assert context_of(decision).trace_id == traces[cause]
    assert decode(trigger.value())["caused_by"] == decode(decision.value())["decision_id"]
    assert context_of(trigger).trace_id == traces[cause]
    for change in consume_all(settings, "interest-tags", 1):
        assert context_of(change).trace_id == traces[decode(change.value())["caused_by"]]
    (letter,) = consume_exactly(settings, "dead-letters", 1)
    assert context_of(letter).trace_id == "d" * 32


async def test_a_click_without_or_with_a_malformed_traceparent_starts_a_trace_of_its_own(
        worker: Worker, settings: Settings) -> None:
    malformed = [("traceparent", b"00-not-a-trace-01"), ("tracestate", b"\xff")]
    zero = traceparent("0" * 32)  # well-formed, but W3C's invalid trace id
    await clicks_applied(worker, settings, [
        *(click(f"{name[0]}{n}", name, n, headers)
          for name, headers in (("bob", None), ("carol", zero), ("dave", malformed))
          for n in (1, 2, 3))])

    decisions = {decode(m.value())["customer_id"]: m
                 for m in consume_exactly(settings, "decisions", 3)}
    triggers = {decode(m.value())["customer_id"]: m
                for m in consume_exactly(settings, "send-triggers", 3)}
    assert worker.accounting.dead_letters == 0, "a bad traceparent is no reason to refuse"
    traces = {name: context_of(decisions[name]).trace_id for name in decisions}
    assert len(set(traces.values())) == 3, f"each click's trace is its own: {traces}"
    assert "0" * 32 not in traces.values()
    for name, trigger in triggers.items():
        assert context_of(trigger).trace_id == traces[name]


async def test_an_erasure_requested_over_http_carries_the_requests_trace_to_what_it_causes(
        settings: Settings) -> None:
    operator = "operator-token-0123456789"
    settings = settings.with_(web_port=0, operator_tokens=(operator,))
    worker = build_worker(settings)
    await worker.start()
    runner = await serve(build_api(worker), "127.0.0.1", 0)
    try:
        produce(settings, [click("e1", "c-gone", 1)])
        await eventually(lambda: worker.accounting.events_in >= 1, 60, "the click")
        trace_id = "5" * 32
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{bound_port(runner)}/v1/customers/c-gone/erasure",
                headers={"Authorization": f"Bearer {operator}",
                         "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}) as answer:
            assert answer.status == 202, await answer.text()
        (request,) = consume_all(settings, "consents", 1)
        assert context_of(request).trace_id == trace_id
        await eventually(lambda: worker.accounting.events_in >= 2, 60, "the request")
        (erased,) = consume_exactly(settings, "customer-erased", 1)
        assert context_of(erased).trace_id == trace_id
    finally:
        await stop_or_explain(runner.cleanup(), "the API to stop")
        await stop_or_explain(worker.stop(), "the worker to stop")


class Collector:
    """An OTLP/HTTP receiver: takes protobuf ``ExportTraceServiceRequest`` POSTs."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str]] = []  # name, trace id, span id, parent

    async def traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        exported = ExportTraceServiceRequest.FromString(await request.read())
        for resource in exported.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend((s.name, s.trace_id.hex(), s.span_id.hex(),
                                   s.parent_span_id.hex()) for s in scope.spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def names(self) -> set[str]:
        return {name for name, *_ in self.spans}


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    received = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", received.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr] # started
    try:
        yield received, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_with_an_otlp_endpoint_the_batch_steps_arrive_as_spans_in_the_clicks_trace(
        settings: Settings, collector: tuple[Collector, str]) -> None:
    received, endpoint = collector
    worker = build_worker(settings.with_(otlp_endpoint=endpoint))
    await worker.start()
    try:
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        await clicks_applied(worker, settings, [
            click(f"a{n}", "alice", n, traceparent(trace_id)) for n in (1, 2, 3)])
        (decision,) = consume_exactly(settings, "decisions", 1)
    finally:
        await stop_or_explain(worker.stop(), "the worker to stop")  # exports what is buffered
    await eventually(lambda: "process " + settings.topic("clicks") in received.names(), 30,
                     "the spans at the collector")
    assert set(STEPS) | {"ingest batch"} <= received.names()
    batches = {span_id for name, _, span_id, _ in received.spans if name == "ingest batch"}
    assert {parent for name, _, _, parent in received.spans if name in STEPS} <= batches
    # The decision's traceparent names the span that processed the click, in its trace.
    carried = context_of(decision)
    assert carried.trace_id == trace_id
    assert (f"process {settings.topic('clicks')}", trace_id, carried.span_id,
            "00f067aa0ba902b7") in received.spans
