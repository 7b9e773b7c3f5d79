"""``relevanz status``: a worker's ``/v1/status`` as a table in the terminal.

Talks HTTP to the operator API of a running worker (``--url``, by default the
``RELEVANZ_WEB_HOST:RELEVANZ_WEB_PORT`` of this configuration) with the token
in ``RELEVANZ_API_TOKEN``.  An unreachable API or a refused token ends the
command with one line and exit code 1, like every other command.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from typing import Any

import aiohttp
import click

from streams.cli.one_line import one_line_errors
from streams.errors import ConfigError, OperatorApiError
from streams.settings import Settings

TIMEOUT_S = 10.0


def default_url(settings: Settings) -> str:
    """The API of a worker running with these settings on this machine.

    >>> default_url(Settings(web_host="0.0.0.0", web_port=8080))
    'http://127.0.0.1:8080'
    >>> default_url(Settings(web_host="::1", web_port=9000))
    'http://[::1]:9000'
    """
    host = settings.web_host
    with contextlib.suppress(ValueError):  # a name, not an address
        address = ipaddress.ip_address(host)
        # Listening on every interface: this machine answers on loopback.
        host = "127.0.0.1" if address.is_unspecified else (
            f"[{host}]" if address.version == 6 else host)
    return f"http://{host}:{settings.web_port}"


async def fetch_status(url: str, token: str) -> dict[str, Any]:
    """GET ``{url}/v1/status`` with ``token``; :class:`OperatorApiError` on failure."""
    target = url.rstrip("/") + "/v1/status"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                target, headers={"Authorization": f"Bearer {token}"}) as response:
            text = await response.text()
            status = response.status
    except aiohttp.InvalidURL as exc:
        raise ConfigError(f"--url: {url!r} is not a URL such as http://127.0.0.1:8080") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # A refused connection says so in its OS error; the rest in their own words.
        os_error = getattr(exc, "os_error", None)
        reason = getattr(os_error, "strerror", None) or str(exc) or type(exc).__name__
        raise OperatorApiError(f"operator API {url} not reachable ({reason}); check --url "
                               "and that a worker is running") from exc
    if status in (401, 403):
        raise OperatorApiError(f"operator API {url} refused the token (HTTP {status}); set "
                               "RELEVANZ_API_TOKEN to a viewer or operator token")
    if status != 200:
        raise OperatorApiError(f"operator API {url} answered HTTP {status} for /v1/status")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise OperatorApiError(f"{url} did not answer with JSON; is it a Relevanz worker?"
                               ) from exc
    if not isinstance(body, dict) or "partitions" not in body:
        raise OperatorApiError(f"{url} did not answer with a Relevanz status")
    return body


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Aligned columns; numbers right-aligned.

    >>> print(table(["topic", "lag"], [["clicks", 3], ["purchases", 120]]))
    topic      lag
    clicks       3
    purchases  120
    """
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) and rows
               for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in cells])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def render(status: dict[str, Any]) -> str:
    """The readable overview of one status document."""
    checks = ", ".join(f"{k} {v}" for k, v in status["checks"].items())
    out = [f"Relevanz {status['version']} · group {status['consumer_group']} · "
           f"{'READY' if status['ready'] else 'NOT READY'} ({checks}) · "
           f"up {_duration(status['uptime_s'])}"]
    controls = status.get("controls")
    if controls is not None:
        campaigns = ", ".join(controls["paused_campaigns"]) or "none"
        out.append(f"Sending: {'PAUSED (kill switch on)' if controls['paused'] else 'on'} · "
                   f"paused campaigns: {campaigns}")
    out.append("")
    out.append(table(["agent", "events/s 1m", "events 1m", "events/s 5m", "events 5m"], [
        [agent, w["1m"]["per_s"], w["1m"]["events"], w["5m"]["per_s"], w["5m"]["events"]]
        for agent, w in status["throughput"].items()]))
    c = status["counts"]
    out.append("")
    out.append(f"Events: {c['events_in']:,} consumed · {c['applied']:,} applied · "
               f"{c['duplicates']:,} duplicates · {c['dead_letters']:,} dead letters · "
               f"{c['decisions']:,} decisions · {c['send_triggers']:,} send triggers")
    store = status["store"]
    latency = (f"{store['latency_ms']:.2f} ms (p50 {_cell(store['latency_ms_p50'])}, "
               f"max {_cell(store['latency_ms_max'])})" if store["reachable"]
               else "NOT REACHABLE")
    out.append(f"Store: {store['kind']}, {latency}")
    tags = status["interest_tags"]
    out.append(f"Interest tags: {tags['tag_changes']:,} changes · "
               f"{tags['cached_customers']:,} customers cached")
    models = status["models"]
    out.append("Models: " + (f"{len(models['quality'])} evaluated" if models["quality"]
                             else models.get("note", "none")))
    out.append("")
    partitions = status["partitions"]
    if partitions:
        out.append(table(["topic", "partition", "end", "committed", "lag"], [
            [p["topic"], p["partition"], p["end_offset"], p["committed_offset"], p["lag"]]
            for p in partitions]))
        out.append(f"Lag total: {_cell(status['lag_total'])}")
    else:
        out.append("No partitions assigned.")
    letters = status["dead_letters"]
    if letters["latest"]:
        out.append("")
        shown = letters["latest"][:10]
        out.append(f"Latest dead letters ({len(shown)} of {letters['total']:,}):")
        out.append(table(["received", "topic", "partition/offset", "reason"], [
            [d["received_at"], d["source_topic"], f"{d['partition']}/{d['offset']}",
             d["reason"]] for d in shown]))
    return "\n".join(out)


@click.command()
@click.option("--url", metavar="URL",
              help="Base URL of a worker's operator API  [default: "
                   "http://RELEVANZ_WEB_HOST:RELEVANZ_WEB_PORT]")
@click.option("--json", "as_json", is_flag=True, help="Print /v1/status as one JSON line.")
def status(url: str | None, as_json: bool) -> None:
    """Show a running worker's status: readiness, throughput, lag, errors, controls.

    Asks the worker's operator API (/v1/status) with the token in
    RELEVANZ_API_TOKEN (a viewer token is enough) and prints a table.
    """

    one_line_errors(_status)(url, as_json)


def _status(url: str | None, as_json: bool) -> None:
    settings = Settings.from_env()
    if not settings.api_token:
        raise ConfigError("RELEVANZ_API_TOKEN: not set; give it a viewer or operator token "
                          "of the worker (RELEVANZ_VIEWER_TOKENS / RELEVANZ_OPERATOR_TOKENS)")
    body = asyncio.run(fetch_status(url or default_url(settings), settings.api_token))
    click.echo(json.dumps(body, sort_keys=True) if as_json else render(body))
