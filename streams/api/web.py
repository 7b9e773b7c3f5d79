"""The operator HTTP API (aiohttp), served by every worker.

Routes are declared once, in :data:`ROUTES`, with the role each needs; the
OpenAPI document (:mod:`streams.api.openapi`) describes exactly these (a test
holds them in step).  ``/health`` (the process is alive) and ``/ready`` (see
:class:`streams.api.status.Monitor`) are open to orchestrators, as is the
dashboard's static shell, which holds no data: the page asks for a token and
sends it with every API call.  Everything else needs a bearer token
(:mod:`streams.api.auth`):

- missing, malformed or unknown token: 401, ``WWW-Authenticate: Bearer``;
- a viewer token on a route that changes something: 403;
- malformed input: 400 with a message naming the problem;
- a body above :data:`MAX_BODY_BYTES`: 413.

Errors are JSON ``{"error": "..."}`` and never echo the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiokafka.errors import KafkaError

from agents.pipeline import campaign_desk, campaign_rows
from streams.api.auth import Role, Tokens, fingerprint, generate_tokens
from streams.api.metrics import CONTENT_TYPE, render
from streams.api.status import Monitor
from streams.errors import BrokerUnavailable, ConfigError, StoreUnavailable
from streams.tracing import carried

if TYPE_CHECKING:
    from streams.app import Worker

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 16 * 1024
_MAX_ID = 200
_MAX_REASON = 500

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One route: method, path, the role it needs (None: open), its handler, what it does."""

    method: str
    path: str
    role: Role | None
    handler: str  # name of the OperatorApi method serving it
    summary: str


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", None, "health", "Liveness: the process answers"),
    Route("GET", "/ready", None, "ready",
          "Readiness: broker reachable, partitions assigned, store reachable"),
    Route("GET", "/dashboard", None, "dashboard_file",
          "The dashboard page (static; asks for a token)"),
    Route("GET", "/dashboard/dashboard.js", None, "dashboard_file", "The dashboard's script"),
    Route("GET", "/dashboard/dashboard.css", None, "dashboard_file",
          "The dashboard's style sheet"),
    Route("GET", "/v1/me", Role.VIEWER, "me", "The role of the presented token"),
    Route("GET", "/v1/status", Role.VIEWER, "status",
          "Partitions and lag, throughput, dead letters, store, models, controls, version"),
    Route("GET", "/v1/history", Role.VIEWER, "history",
          "The last 15 minutes of throughput, lag and tag changes, every 5 s"),
    Route("GET", "/v1/trends", Role.VIEWER, "trends",
          "The last 2 hours of campaign uplift and model quality, every 15 s"),
    Route("GET", "/metrics", Role.VIEWER, "metrics", "Prometheus text format"),
    Route("GET", "/v1/openapi.json", Role.VIEWER, "openapi", "This API's OpenAPI document"),
    Route("GET", "/v1/customers/{customer_id}", Role.VIEWER, "customer",
          "Everything held about one customer"),
    Route("POST", "/v1/customers/{customer_id}/erasure", Role.OPERATOR, "erase",
          "Request the erasure of one customer (published on consents, as any erasure)"),
    Route("POST", "/v1/decide", Role.VIEWER, "decide",
          "Choose content for a customer, channel and slot now (web touchpoints); "
          "for a customer the store does not hold (unknown or erased) a non-personalised "
          "answer that stores and publishes nothing; with session_id and touchpoint, the "
          "next best action for a visitor's or customer's session"),
    Route("GET", "/v1/controls", Role.VIEWER, "controls",
          "Pause state: kill switch and paused campaigns"),
    Route("POST", "/v1/controls/pause", Role.OPERATOR, "pause",
          "Kill switch on: no send trigger goes out from any worker"),
    Route("POST", "/v1/controls/resume", Role.OPERATOR, "resume", "Kill switch off"),
    Route("POST", "/v1/controls/campaigns/{campaign_id}/pause", Role.OPERATOR,
          "pause_campaign", "Pause one campaign"),
    Route("POST", "/v1/controls/campaigns/{campaign_id}/resume", Role.OPERATOR,
          "resume_campaign", "Resume one campaign"),
    Route("GET", "/v1/campaigns", Role.VIEWER, "campaigns",
          "Every campaign with its counts for treated and holdout customers and the uplift"),
    Route("GET", "/v1/campaigns/{campaign_id}", Role.VIEWER, "campaign",
          "One campaign's definition, counts per content variant and uplift"),
    Route("GET", "/v1/proposals", Role.VIEWER, "proposals",
          "Send proposals of campaigns in approval mode (?status=proposed&limit=100)"),
    Route("POST", "/v1/proposals/{proposal_id}/approve", Role.OPERATOR, "approve",
          "Approve a proposal: exactly one send trigger goes out"),
    Route("POST", "/v1/proposals/{proposal_id}/reject", Role.OPERATOR, "reject",
          "Reject a proposal: nothing is sent"),
)

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                  "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                  "base-uri 'none'; form-action 'none'")
_DASHBOARD_FILES = {
    "/dashboard": ("index.html", "text/html"),
    "/dashboard/dashboard.js": ("dashboard.js", "application/javascript"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css"),
}
_ROLE_KEY = web.AppKey("route_roles", dict)
#: The application's :class:`Monitor` (for embedding the API elsewhere, and tests).
MONITOR_KEY = web.AppKey("monitor", Monitor)
_ROLE = web.RequestKey("role", Role)
_FINGERPRINT = web.RequestKey("token_fingerprint", str)
_BEARER = re.compile(r"Bearer ([A-Za-z0-9\-._~+/]+=*)")


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status,
                             headers={**_SECURITY_HEADERS, **headers})


def _unauthorised() -> web.Response:
    return _error(401, "missing or invalid bearer token",
                  **{"WWW-Authenticate": 'Bearer realm="relevanz"'})


def _auth_middleware(tokens: Tokens) -> Any:
    @web.middleware
    async def authorise(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        roles: dict[object, Role | None] = request.app[_ROLE_KEY]
        if route in roles and roles[route] is None:
            return await handler(request)  # an open route
        # Unknown paths need a token too, so the route table cannot be probed.
        match = _BEARER.fullmatch(request.headers.get("Authorization", ""))
        role = tokens.role_of(match.group(1)) if match else None
        if role is None:
            return _unauthorised()
        needed = roles.get(route)
        if needed is not None and not role.may(needed):
            return _error(403, f"this needs the {needed.value} role")
        request[_ROLE] = role
        request[_FINGERPRINT] = fingerprint(match.group(1)) if match else ""
        return await handler(request)

    return authorise


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body above the limit of {MAX_BODY_BYTES} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return _error(exc.status, exc.reason, **allow)
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class BadInput(ValueError):
    """Malformed request input; answered with 400 and this message."""


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    """The JSON object in the body (empty body: {}), with only ``allowed`` fields."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES,
                                            actual_size=request.content_length)
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
        # JSON escapes can make lone surrogates, which no store or log can encode.
        json.dumps(body, ensure_ascii=False).encode()
    except RecursionError as exc:
        raise BadInput("body is nested too deeply to be JSON this API reads") from exc
    except UnicodeEncodeError as exc:
        raise BadInput("body holds text that is not valid Unicode (a lone surrogate)") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise BadInput("body must be a JSON object such as {\"reason\": \"...\"}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadInput(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return body


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise BadInput("reason: expected a string")
    if len(reason) > _MAX_REASON:
        raise BadInput(f"reason: at most {_MAX_REASON} characters, got {len(reason)}")
    return reason.strip() or None


def _identifier(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not 1 <= len(value) <= _MAX_ID or not value.isprintable():
        raise BadInput(f"{name}: expected 1 to {_MAX_ID} printable characters")
    return value


def _models_drift(monitor: Monitor) -> list[dict[str, Any]]:
    """The recent drifts of the learned models, each with its time (chart markers)."""
    from streams.api.status import recent_drifts

    return recent_drifts(monitor.worker.stage)


class OperatorApi:
    """The handlers, bound to one worker and its monitor."""

    def __init__(self, worker: Worker, monitor: Monitor):
        self.worker = worker
        self.monitor = monitor
        #: Writes started after an answer, kept referenced until they finish.
        self._tasks: set[asyncio.Future[None]] = set()

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(self, _: web.Request) -> web.Response:
        ready, checks = self.monitor.readiness()
        return web.json_response({"status": "ready" if ready else "not ready",
                                  "checks": checks}, status=200 if ready else 503)

    async def dashboard_file(self, request: web.Request) -> web.Response:
        name, content_type = _DASHBOARD_FILES[request.path]
        body = files("streams.api").joinpath("dashboard", name).read_bytes()
        return web.Response(body=body, content_type=content_type,
                            headers={"Content-Security-Policy": _DASHBOARD_CSP})

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response({"role": request[_ROLE].value,
                                  "token_fingerprint": request[_FINGERPRINT]})

    async def status(self, _: web.Request) -> web.Response:
        return web.json_response(self.monitor.snapshot())

    async def history(self, _: web.Request) -> web.Response:
        return web.json_response({"step_s": 5, "points": list(self.monitor.history)})

    async def trends(self, _: web.Request) -> web.Response:
        from streams.api.status import TREND_STEP_S

        return web.json_response({"step_s": TREND_STEP_S, "points": list(self.monitor.trends),
                                  "drift": _models_drift(self.monitor)})

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=render(self.monitor), headers={"Content-Type": CONTENT_TYPE})

    async def openapi(self, _: web.Request) -> web.Response:
        from streams.api.openapi import document

        return web.json_response(document())

    async def customer(self, request: web.Request) -> web.Response:
        from streams.app import utc_now
        from streams.logs import customer_ref
        from streams.privacy import export_customer

        customer_id = _identifier(request, "customer_id")
        raw_as_of = request.query.get("as_of")
        as_of = None
        if raw_as_of is not None:
            try:
                as_of = datetime.fromisoformat(raw_as_of)
            except ValueError:
                as_of = None
            if as_of is None or as_of.tzinfo is None:
                return _error(400, f"as_of {raw_as_of[:64]!r} is not an ISO 8601 time with "
                                   "an offset (e.g. 1997-10-01T00:00:00+00:00)")
        try:
            stage = self.worker.stage
            held = await export_customer(self.worker.store, customer_id, utc_now(),
                                         stage.forecaster if stage is not None else None,
                                         as_of=as_of)
        except StoreUnavailable as exc:
            log.warning("customer_view_failed", error=str(exc))
            return _error(503, "the store is not reachable; try again")
        log.info("customer_viewed", customer=customer_ref(customer_id),
                 token=request[_FINGERPRINT], found=held is not None)
        if held is None:
            return _error(404, "nothing is held about this customer")
        return web.json_response(held)

    async def erase(self, request: web.Request) -> web.Response:
        import uuid

        from schemas.codec import encode
        from streams.app import utc_now
        from streams.logs import customer_ref
        from streams.privacy import erasure_request

        customer_id = _identifier(request, "customer_id")
        await _body(request, set())
        record = erasure_request(customer_id, f"erasure-{uuid.uuid4().hex}", utc_now())
        settings = self.worker.settings
        consents = self.worker.app.topic(settings.topic("consents"), key_type=bytes,
                                         value_type=bytes, key_serializer="raw",
                                         value_serializer="raw")
        try:
            sent = await consents.send(key=customer_id.encode(), value=encode(record),
                                       headers=carried(request.headers))
            await sent  # the answer says the request is on the topic
        except KafkaError as exc:
            log.warning("erasure_request_failed", error=str(exc))
            return _error(503, "the broker did not take the request; nothing changed, "
                               "try again")
        log.info("erasure_requested", customer=customer_ref(customer_id),
                 token=request[_FINGERPRINT])
        return web.json_response({"customer_id": customer_id, "event_id": record.event_id,
                                  "requested_at": record.occurred_at.isoformat()},
                                 status=202)

    async def decide(self, request: web.Request) -> web.Response:
        """A decision for a touchpoint.

        For a customer the store holds, the decision is personalised as their
        consent allows, recorded with the customer and published.  For one it
        does not hold (an unknown id, or a customer erased since), the answer
        is the non-personalised default, and nothing is stored or published:
        a viewer token serves touchpoints, and must not be able to create
        customers (2,000 made-up ids made 2,000 stored customers) nor bring
        an erased one back.
        """
        from agents.core.consent import ConsentPolicy
        from agents.core.customer import CustomerState
        from schemas.codec import encode
        from schemas.records import CHANNELS
        from streams.api.session_decide import SESSION_FIELDS
        from streams.app import utc_now

        body = await _body(request, {"customer_id", "channel", "slot", *SESSION_FIELDS})
        if "session_id" in body:
            return await self._decide_session(body)
        values = {}
        for name in ("customer_id", "channel", "slot"):
            value = body.get(name)
            if not isinstance(value, str) or not 1 <= len(value) <= _MAX_ID:
                raise BadInput(f"{name}: expected a string of 1 to {_MAX_ID} characters")
            values[name] = value
        if values["channel"] not in CHANNELS:
            raise BadInput(f"channel: expected one of {', '.join(CHANNELS)}")
        stage, worker = self.worker.stage, self.worker
        learner = stage.learner if stage is not None else None
        if stage is None or learner is None:
            return _error(503, "this process makes no decisions")
        now = utc_now()
        cid = values["customer_id"]
        try:
            held = stage.cache.peek(cid) or (
                await worker.store.load_customers([cid], now)).get(cid)
        except StoreUnavailable as exc:
            log.warning("decide_failed", error=str(exc))
            return _error(503, "the store is not reachable; try again")
        if held is None or held == CustomerState(cid):  # an erased one is cached empty
            # Unknown or erased (an erasure deletes every stored row): no consent on
            # record, so nothing personal is read, and nothing is kept under this id.
            made = learner.decide(CustomerState(cid), values["channel"], values["slot"], now,
                                  stage.catalogue.items, ConsentPolicy())
            if made is None:
                return _error(404, "no catalogue item fits this channel and slot now")
            log.info("decided_without_record", reason="customer not held")
            return web.json_response(_decision_json(made[0]))
        made = learner.decide(held, values["channel"], values["slot"], now,
                              stage.catalogue.items, stage.rules.consent)
        if made is None:
            return _error(404, "no catalogue item fits this channel and slot now")
        decision, chosen = made
        if decision.policy != "neutral":
            learner.opened(decision, chosen)  # its reward will come as a click with its id
        worker.accounting.decisions += 1
        decisions = worker.ingest.outputs.get("decisions") if worker.ingest else None
        if decisions is not None:
            await decisions.send(key=cid.encode(), value=encode(decision),
                                 headers=carried(request.headers))
        # Kept for the customer view off the answer's path: the page load does not wait.
        self._background(worker.store.record_decisions(
            [campaign_rows.stored_decision(decision)], now, worker.settings.history_retention_s))
        return web.json_response(_decision_json(decision))

    async def _decide_session(self, body: dict[str, Any]) -> web.Response:
        """The next best action for a session (:mod:`streams.api.session_decide`)."""
        from datetime import timedelta

        from agents.core.visitors import VisitorRules
        from streams.api.session_decide import SESSION_FIELDS, decide_session
        from streams.app import utc_now

        values: dict[str, str] = {}
        for name in sorted(set(body)):
            value = body[name]
            if name not in SESSION_FIELDS:
                raise BadInput(f"{name}: not a field of a session decision (session_id, "
                               "touchpoint and visitor_id or customer_id)")
            if not isinstance(value, str) or not 1 <= len(value) <= _MAX_ID:
                raise BadInput(f"{name}: expected a string of 1 to {_MAX_ID} characters")
            values[name] = value
        if "touchpoint" not in values:
            raise BadInput("touchpoint: missing (the slot the answer is for, e.g. web-banner)")
        if ("visitor_id" in values) == ("customer_id" in values):
            raise BadInput("visitor_id, customer_id: give exactly one of them")
        stage = self.worker.stage
        if stage is None:
            return _error(503, "this process makes no decisions")
        rules = VisitorRules(expire_after=timedelta(seconds=self.worker.settings.visitor_expiry_s))
        try:
            answer = await decide_session(self.worker.store, stage, rules, values, utc_now())
        except StoreUnavailable as exc:
            log.warning("decide_failed", error=str(exc))
            return _error(503, "the store is not reachable; try again")
        return web.json_response(answer)

    async def controls(self, _: web.Request) -> web.Response:
        controls = self.worker.controls
        if controls is None:
            return _error(503, "this process has no controls")
        return web.json_response(controls.as_dict())

    async def _change(self, request: web.Request, *, paused: bool,
                      campaign_id: str | None = None) -> web.Response:
        body = await _body(request, {"reason"})
        reason = _reason(body)
        controls = self.worker.controls
        if controls is None:
            return _error(503, "this process has no controls")
        by = f"{request[_ROLE].value}:{request[_FINGERPRINT]}"
        try:
            await controls.change(paused=paused, changed_by=by, campaign_id=campaign_id,
                                  reason=reason)
        except BrokerUnavailable as exc:
            log.warning("control_change_failed", error=str(exc))
            return _error(503, "the broker did not take the change; nothing changed, try again")
        return web.json_response(controls.as_dict())

    async def pause(self, request: web.Request) -> web.Response:
        return await self._change(request, paused=True)

    async def resume(self, request: web.Request) -> web.Response:
        return await self._change(request, paused=False)

    async def pause_campaign(self, request: web.Request) -> web.Response:
        return await self._change(request, paused=True,
                                  campaign_id=_identifier(request, "campaign_id"))

    async def resume_campaign(self, request: web.Request) -> web.Response:
        return await self._change(request, paused=False,
                                  campaign_id=_identifier(request, "campaign_id"))

    async def campaigns(self, _: web.Request) -> web.Response:
        if self.worker.stage is None:
            return _error(503, "this process runs no campaigns")
        try:
            report = await campaign_desk.campaign_report(self.worker)
        except StoreUnavailable as exc:
            log.warning("campaigns_failed", error=str(exc))
            return _error(503, "the store is not reachable; try again")
        return web.json_response({"campaigns": report})

    async def campaign(self, request: web.Request) -> web.Response:
        campaign_id = _identifier(request, "campaign_id")
        if self.worker.stage is None:
            return _error(503, "this process runs no campaigns")
        try:
            report = await campaign_desk.campaign_report(self.worker, campaign_id)
        except StoreUnavailable as exc:
            log.warning("campaigns_failed", error=str(exc))
            return _error(503, "the store is not reachable; try again")
        if not report:
            return _error(404, f"no campaign {campaign_id}")
        return web.json_response(report[0])

    async def proposals(self, request: web.Request) -> web.Response:
        from agents.core.proposals import STATUSES
        from streams.app import utc_now

        status = request.query.get("status")
        if status is not None and status not in STATUSES:
            raise BadInput(f"status: expected one of {', '.join(STATUSES)}")
        raw_limit = request.query.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            raise BadInput("limit: expected a whole number from 1 to 1000")
        try:
            found = await campaign_desk.list_proposals(self.worker, status, int(raw_limit),
                                                       utc_now())
        except StoreUnavailable as exc:
            log.warning("proposals_failed", error=str(exc))
            return _error(503, "the store is not reachable; try again")
        return web.json_response({"proposals": found})

    async def _resolve(self, request: web.Request, approve: bool) -> web.Response:
        from streams.app import utc_now

        proposal_id = _identifier(request, "proposal_id")
        body = await _body(request, {"reason"})
        note = _reason(body)
        by = f"{request[_ROLE].value}:{request[_FINGERPRINT]}"
        try:
            if approve:
                outcome = await campaign_desk.approve(self.worker, proposal_id, by, utc_now())
            else:
                outcome = await campaign_desk.reject(self.worker, proposal_id, by, note,
                                                     utc_now())
        except StoreUnavailable as exc:
            log.warning("proposal_failed", error=str(exc))
            return _error(503, "the store is not reachable; nothing changed, try again")
        return web.json_response(outcome.body, status=outcome.status,
                                 headers=_SECURITY_HEADERS)

    async def approve(self, request: web.Request) -> web.Response:
        return await self._resolve(request, approve=True)

    async def reject(self, request: web.Request) -> web.Response:
        return await self._resolve(request, approve=False)

    def _background(self, work: Awaitable[None]) -> None:
        """Run ``work`` after the answer; a failure is logged, never raised."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def done(finished: asyncio.Future[None]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.warning("background_write_failed", error=str(finished.exception()))

        task.add_done_callback(done)

    def handler(self, route: Route) -> Handler:
        """The handler serving ``route``, answering bad input with 400."""
        method: Handler = getattr(self, route.handler)

        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await method(request)
            except BadInput as exc:
                return _error(400, str(exc))

        return guarded


def build_api(worker: Worker, tokens: Tokens | None = None) -> web.Application:
    """The operator API of ``worker``; tokens default to the worker's settings.

    The monitor behind ``/ready`` and ``/v1/status`` starts and stops with the
    application (``serve`` and the runner's cleanup).
    """
    tokens = tokens if tokens is not None else Tokens.from_settings(worker.settings)
    if not tokens:
        log.warning("operator_api_without_tokens",
                    hint="set RELEVANZ_OPERATOR_TOKENS / RELEVANZ_VIEWER_TOKENS; "
                         "every route but /health and /ready refuses all requests")
    monitor = Monitor(worker)
    handlers = OperatorApi(worker, monitor)
    api = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[worker.instruments.http_middleware(),
                                       _json_errors, _auth_middleware(tokens)])
    roles: dict[object, Role | None] = {}
    for route in ROUTES:
        added = api.router.add_route(route.method, route.path, handlers.handler(route))
        roles[added] = route.role
    api[_ROLE_KEY] = roles
    api[MONITOR_KEY] = monitor

    async def start_monitor(_: web.Application) -> None:
        await monitor.start()

    async def stop_monitor(_: web.Application) -> None:
        await monitor.stop()

    api.on_startup.append(start_monitor)
    api.on_cleanup.append(stop_monitor)
    return api



class _NoRequestBytes(logging.Filter):
    """Log a request aiohttp could not parse in one line, without its bytes.

    aiohttp logs such a request (an over-long request line, a malformed
    header) with the parser's error, which quotes the start of the request:
    a bearer token or a customer id in the URL would land in the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "bad HTTP request from %s refused (%s, status %s); bytes not logged"
            record.args = (remote, type(error).__name__, error.code)
            record.exc_info = None
            record.exc_text = None
        return True


_REQUEST_BYTES_FILTER = _NoRequestBytes()


async def serve(api: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``api``; the caller cleans up the returned runner."""
    logging.getLogger("aiohttp.server").addFilter(_REQUEST_BYTES_FILTER)  # once: a set
    runner = web.AppRunner(api, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"RELEVANZ_WEB_PORT: cannot listen on {host}:{port} ({exc.strerror})"
        ) from exc
    log.info("operator_api_listening", host=host, port=bound_port(runner))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port ``runner`` listens on (useful with ``RELEVANZ_WEB_PORT=0``)."""
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise ConfigError("RELEVANZ_WEB_PORT: the operator API is not listening")


async def serve_for_demo(worker: Worker, announce: Callable[[str], None]) -> web.AppRunner:
    """Serve the API and dashboard of the demo's worker and say where, once.

    Without configured tokens the demo makes an operator and a viewer token
    for this run and prints them; configured tokens are the user's secrets
    and are not printed.
    """
    settings = worker.settings
    tokens = Tokens.from_settings(settings)
    generated: tuple[str, str] | None = None
    if not tokens:
        generated = generate_tokens()
        tokens = Tokens.from_lists(operators=[generated[0]], viewers=[generated[1]])
    runner = await serve(build_api(worker, tokens), settings.web_host, settings.web_port)
    from streams.api.overview import default_url

    base = default_url(settings.with_(web_port=bound_port(runner)))
    if generated is None:
        announce(f"dashboard: {base}/dashboard (sign in with a token from "
                 "RELEVANZ_OPERATOR_TOKENS or RELEVANZ_VIEWER_TOKENS)")
    else:
        operator, viewer = generated
        announce(f"dashboard: {base}/dashboard#token={operator}")
        announce(f"operator token: {operator}")
        announce(f"viewer token: {viewer}")
        announce(f"terminal: RELEVANZ_API_TOKEN={viewer} relevanz status --url {base}")
    return runner


def _decision_json(decision: Any) -> dict[str, Any]:
    """A decision record as the JSON the API answers with."""
    return {k: v.isoformat() if hasattr(v, "isoformat") else v
            for k, v in decision.asdict().items()}
