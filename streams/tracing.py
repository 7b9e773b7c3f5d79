"""Trace context across the Kafka hop: W3C ``traceparent`` in, on every output out.

An input message's ``traceparent`` and ``tracestate`` headers (W3C Trace
Context) name the trace it belongs to; a message without a valid
``traceparent`` starts a new trace.  Every message the ingest agent
publishes because of it (decisions, send triggers and cancellations,
interest tag changes, dead letters...) carries that trace in its own
headers, so a collector joins the click to the decision and the send it
caused.  Which input caused an output is read from the output: a dead
letter names its source offset; ``caused_by`` names the event, or the
decision, behind the rest; failing those, the batch's last message with the
output's key (its customer); failing that, the batch's own trace.

With an OTLP endpoint (``RELEVANZ_OTLP_ENDPOINT``) the worker records
spans too: ``ingest batch`` per batch, linked to its inputs' contexts, with
one child per step (``validate``, ``deduplicate``, ``apply``, ``commit``,
``publish``), and ``process <topic>`` per input that caused an output: a
child of the input's context, and the parent its outputs' ``traceparent``
names.  Without an endpoint no span is built: a step mark is one attribute
test, and only inputs that caused an output have their headers read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from random import getrandbits
from typing import TYPE_CHECKING, Any

from faust.types import EventT
from opentelemetry import context as otel_context
from opentelemetry import trace

from schemas.records import DeadLetter
from streams.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Kafka message headers as the producer takes them.
Headers = list[tuple[str, bytes]]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16
#: W3C: a tracestate of more than 512 characters may be dropped whole.
_MAX_TRACESTATE = 512
#: Outputs' own ids, which a later output's ``caused_by`` may name.
_OUTPUT_IDS = ("decision_id", "trigger_id", "proposal_id", "event_id")
STEPS = ("validate", "deduplicate", "apply", "commit", "publish")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A position in a trace: what a ``traceparent`` (and ``tracestate``) header says."""

    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero: the parent of what follows
    sampled: bool
    state: bytes = b""

    def headers(self) -> Headers:
        """The headers that carry this context on a Kafka message.

        >>> TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True).headers()
        [('traceparent', b'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')]
        """
        flags = "01" if self.sampled else "00"
        headers = [(TRACEPARENT, f"00-{self.trace_id}-{self.span_id}-{flags}".encode())]
        if self.state:
            headers.append((TRACESTATE, self.state))
        return headers


def parse_traceparent(value: bytes | str | None, state: bytes | str | None = None
                      ) -> TraceContext | None:
    """The context a ``traceparent`` value names, or None when it names none validly.

    A ``tracestate`` is kept if it is printable ASCII of at most 512 characters.

    >>> parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", b"k=v")
    TraceContext(trace_id='4bf92f3577b34da6a3ce929d0e0e4736', span_id='00f067aa0ba902b7', \
sampled=True, state=b'k=v')
    >>> [parse_traceparent(v) for v in (None, b"\\xff", "00-not-hex-01", "ff-" + "1" * 32
    ...  + "-" + "1" * 16 + "-01", "00-" + "0" * 32 + "-" + "1" * 16 + "-01")]
    [None, None, None, None, None]
    """
    if value is None:
        return None
    try:
        text = value.decode("ascii") if isinstance(value, bytes) else value
    except UnicodeDecodeError:
        return None
    if not isinstance(text, str) or len(text) > _MAX_TRACESTATE:
        return None  # not a header value, or far longer than any version's
    match = _TRACEPARENT.fullmatch(text.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _NO_TRACE \
            or span_id == _NO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1), _tracestate(state))


def _tracestate(state: bytes | str | None) -> bytes:
    if state is None:
        return b""
    raw = state.encode("ascii", "replace") if isinstance(state, str) else state
    if len(raw) > _MAX_TRACESTATE or any(b < 0x20 or b > 0x7E for b in raw):
        return b""
    return raw.strip()


def incoming(headers: Sequence[tuple[str, bytes]] | Mapping[str, Any] | None
             ) -> TraceContext | None:
    """The trace context in a consumed message's headers, or None.

    >>> incoming([("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")])
    TraceContext(trace_id='4bf92f3577b34da6a3ce929d0e0e4736', span_id='00f067aa0ba902b7', \
sampled=False, state=b'')
    """
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    parent = state = None
    for name, value in pairs:
        lowered = name.lower() if isinstance(name, str) else name
        if lowered == TRACEPARENT and parent is None:
            parent = value
        elif lowered == TRACESTATE and state is None:
            state = value
    return parse_traceparent(parent, state)


def new_context(sampled: bool = False) -> TraceContext:
    """A new trace (for an input that came without one).

    >>> context = new_context()
    >>> len(context.trace_id), len(context.span_id), context.trace_id != new_context().trace_id
    (32, 16, True)
    """
    return TraceContext(f"{getrandbits(128) or 1:032x}", f"{getrandbits(64) or 1:016x}", sampled)


def carried(headers: Sequence[tuple[str, bytes]] | Mapping[str, Any] | None) -> Headers:
    """Trace headers for a message sent on behalf of a request with ``headers`` (an
    HTTP request's, say): the request's trace, or a new one.

    >>> carried({"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    [('traceparent', b'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')]
    """
    return (incoming(headers) or new_context()).headers()


def otlp_traces_url(endpoint: str) -> str:
    """Where spans go under an OTLP/HTTP base URL (as ``OTEL_EXPORTER_OTLP_ENDPOINT``).

    >>> otlp_traces_url("http://collector:4318"), otlp_traces_url("http://c:4318/v1/traces")
    ('http://collector:4318/v1/traces', 'http://c:4318/v1/traces')
    """
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


class Tracing:
    """Makes each batch's :class:`BatchTrace`; records spans when given a tracer."""

    def __init__(self, tracer: trace.Tracer | None = None,
                 provider: TracerProvider | None = None) -> None:
        self.tracer = tracer
        self._provider = provider

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing:
        """Export over OTLP/HTTP when an endpoint is set; else propagate only."""
        if not settings.otlp_endpoint:
            return cls()
        # Imported only here: a worker that exports nothing does without the SDK,
        # the exporter and their HTTP and protobuf libraries (about 4 MB resident).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        provider = TracerProvider(
            resource=Resource.create({"service.name": "relevanz",
                                      "service.namespace": settings.consumer_group}),
            sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=otlp_traces_url(settings.otlp_endpoint))))
        return cls(provider.get_tracer("relevanz.ingest"), provider)

    @property
    def exporting(self) -> bool:
        """Whether spans are recorded and exported."""
        return self.tracer is not None

    def batch(self, events: Sequence[EventT[Any]]) -> BatchTrace:
        """The trace of one batch, its ``validate`` step begun."""
        return BatchTrace(events, self.tracer)

    def shutdown(self) -> None:
        """Export the spans still buffered and stop the exporter (blocks: the exporter's I/O)."""
        if self._provider is not None:
            self._provider.shutdown()


class BatchTrace:
    """One batch's trace context: the headers of each output, the spans of each step."""

    def __init__(self, events: Sequence[EventT[Any]], tracer: trace.Tracer | None) -> None:
        self._events = events
        self._tracer = tracer
        self._out: dict[int, Headers] = {}  # id(event) -> headers of what it caused
        self._causes: dict[str, EventT[Any]] | None = None
        self._keys: dict[bytes, EventT[Any]] | None = None
        self._offsets: dict[tuple[str, int, int], EventT[Any]] | None = None
        self._records: Sequence[Any] = ()
        self._sources: Sequence[EventT[Any]] = ()
        self._own: Headers | None = None
        self._steps: list[tuple[str, int]] = []
        self._spans: list[trace.Span] = []
        self._batch: trace.Span | None = None
        if tracer is not None:
            self._started = time.time_ns()
            self._steps.append(("validate", self._started))
            self._batch = tracer.start_span(
                "ingest batch", context=otel_context.Context(), kind=trace.SpanKind.CONSUMER,
                start_time=self._started,
                attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                            "messaging.batch.message_count": len(events)})

    def step(self, name: str) -> None:
        """The batch's next step begins (the previous one ends)."""
        if self._batch is not None:
            self._steps.append((name, time.time_ns()))

    def validated(self, records: Sequence[Any], sources: Sequence[EventT[Any]]) -> None:
        """The batch's valid ``records`` and the event each came from; ``deduplicate`` begins."""
        self._records, self._sources = records, sources
        self.step("deduplicate")

    def headers(self, key: bytes | None, record: object) -> Headers:
        """The trace headers of an output ``record`` published with ``key``.

        Call in the order the outputs were emitted: an output's own id (a
        decision's) then names the cause of those that follow (its trigger).
        """
        source = self._source(key, record)
        if source is None:
            return self._batch_headers()
        headers = self._out.get(id(source))
        if headers is None:
            headers = self._out[id(source)] = self._context_of(source).headers()
        causes = self._causes
        if causes is not None:
            for name in _OUTPUT_IDS:
                own = getattr(record, name, None)
                if own is not None:
                    causes.setdefault(own, source)
        return headers

    def end(self) -> None:
        """The batch is done: end and hand over its spans (nothing without a tracer)."""
        batch = self._batch
        if batch is None:
            return
        ended = time.time_ns()
        parent = trace.set_span_in_context(batch, otel_context.Context())
        assert self._tracer is not None
        for (name, started), (_, until) in zip(self._steps,
                                               [*self._steps[1:], ("", ended)], strict=True):
            self._tracer.start_span(name, context=parent, start_time=started).end(until)
        for span in self._spans:
            span.end(ended)
        if batch.is_recording():
            # The inputs' own traces (the SDK keeps the first 128 links).
            for event in self._events[:128]:
                context = incoming(event.message.headers)
                if context is not None:
                    batch.add_link(_span_context(context))
        batch.end(ended)
        self._batch = None

    def _source(self, key: bytes | None, record: object) -> EventT[Any] | None:
        if isinstance(record, DeadLetter):
            if self._offsets is None:
                self._offsets = {(e.message.topic, e.message.partition, e.message.offset): e
                                 for e in self._events}
            return self._offsets.get((record.source_topic, record.partition, record.offset))
        if self._causes is None:
            self._causes = {r.event_id: s for r, s in zip(self._records, self._sources,
                                                          strict=True)}
        caused_by = getattr(record, "caused_by", None)
        source = self._causes.get(caused_by) if caused_by is not None else None
        if source is None and key is not None:
            if self._keys is None:
                self._keys = {e.message.key: e for e in self._events if e.message.key}
            source = self._keys.get(key)
        return source

    def _context_of(self, event: EventT[Any]) -> TraceContext:
        """The context an output of ``event`` carries: the input's own when nothing is
        recorded, else that of a ``process`` span in the input's trace."""
        message = event.message
        context = incoming(message.headers)
        if self._tracer is None:
            return context or new_context()
        parent = (trace.set_span_in_context(trace.NonRecordingSpan(_span_context(context)),
                                            otel_context.Context())
                  if context is not None else otel_context.Context())
        links = [trace.Link(self._batch.get_span_context())] if self._batch is not None else []
        span = self._tracer.start_span(
            f"process {message.topic}", context=parent, kind=trace.SpanKind.CONSUMER,
            start_time=self._started, links=links,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.destination.name": message.topic,
                        "messaging.destination.partition.id": str(message.partition),
                        "messaging.kafka.offset": message.offset})
        self._spans.append(span)
        own = span.get_span_context()
        return TraceContext(f"{own.trace_id:032x}", f"{own.span_id:016x}",
                            own.trace_flags.sampled, context.state if context else b"")

    def _batch_headers(self) -> Headers:
        """Headers of an output no input caused: the batch's own trace."""
        if self._own is None:
            if self._batch is not None:
                own = self._batch.get_span_context()
                self._own = TraceContext(f"{own.trace_id:032x}", f"{own.span_id:016x}",
                                         own.trace_flags.sampled).headers()
            else:
                self._own = new_context().headers()
        return self._own


def _span_context(context: TraceContext) -> trace.SpanContext:
    return trace.SpanContext(
        int(context.trace_id, 16), int(context.span_id, 16), is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if context.sampled
                                     else trace.TraceFlags.DEFAULT),
        trace_state=trace.TraceState.from_header([context.state.decode()])
        if context.state else None)
