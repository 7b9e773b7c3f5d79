"""The operator HTTP API (aiohttp), served by every worker.

So far it answers the probes an orchestrator needs: ``/health`` (the process
is alive) and ``/ready`` (the worker has joined its consumer group and its
store is open).  Status, metrics, customer views and controls join it with
the operator-surface work, behind tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from streams.errors import ConfigError

log = structlog.get_logger(__name__)


def build_api(is_ready: Callable[[], bool]) -> web.Application:
    """The aiohttp application; ``is_ready`` reports worker readiness."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        if is_ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "starting"}, status=503)

    api = web.Application(client_max_size=64 * 1024)
    api.router.add_get("/health", health)
    api.router.add_get("/ready", ready)
    return api


async def serve(api: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``api``; the caller cleans up the returned runner."""
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
    log.info("operator_api_listening", host=host, port=port)
    return runner
