"""The ``relevanz`` command line.

Errors from the platform (:class:`streams.errors.RelevanzError`) end the
command with one readable line on stderr and the error's exit code, never a
traceback; so does a bad argument or option (exit code 2), which click would
otherwise report in four lines.  Human progress goes to stderr; machine
output (``--json``) to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from streams import logs
from streams.api.overview import status
from streams.bench.run import bench
from streams.cli.one_line import one_line_errors
from streams.settings import SETTINGS, Settings

F = TypeVar("F", bound=Callable[..., Any])

# One variable a line: click rewraps help paragraphs unless they start with "\b".
_ENV_WIDTH = max(len(s.name) for s in SETTINGS)
_ENV_HELP = "\b\n" + "\n".join(
    f"{s.name.ljust(_ENV_WIDTH)}  {s.default or '(empty)'}  ({s.accepts})" for s in SETTINGS)


def _settings() -> Settings:
    return Settings.from_env()


def _stderr(message: str) -> None:
    click.echo(message, err=True)


def _run_until_signal(main: Callable[[asyncio.Event], Any]) -> Any:
    """Run ``main(stop)`` in a fresh loop; SIGINT/SIGTERM set ``stop`` for a clean exit."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(runner())


class _Cli(click.Group):
    """The command group, reporting a usage error in one line instead of click's four."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:  # a caller (a test runner) handles errors itself
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # a group called without a command: its help, as click shows it
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "relevanz"
            click.echo(f"{where}: error: {exc.format_message()} "
                       f"(see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"relevanz: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("relevanz: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relevanz")
def main() -> None:
    """Relevanz: event-sourced, real-time personalisation for marketing.

    Configuration comes from RELEVANZ_* environment variables (see the README).
    """


@main.command(epilog=f"Environment (variable and default; the README says what each does):"
                     f"\n\n{_ENV_HELP}")
@one_line_errors
def worker() -> None:
    """Run a worker against the configured broker (RELEVANZ_BROKER_URL).

    Creates missing topics, joins the consumer group and processes events
    until SIGTERM or Ctrl-C, then commits and exits.
    """
    from streams.api.web import build_api, serve
    from streams.app import build_worker

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)

    async def run(stop: asyncio.Event) -> None:
        w = build_worker(settings)
        api = await serve(build_api(w), settings.web_host, settings.web_port)
        try:
            await w.start()
            try:
                await stop.wait()
            finally:
                await w.stop()
        finally:
            await api.cleanup()

    _run_until_signal(run)


def _share(_: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"must be between 0 and 1, got {value:g}")
    return value


@main.command()
@click.option("--events", type=click.IntRange(min=1), default=None,
              help="Publish exactly N events, wait until all are accounted for, then exit. "
                   "Without it, traffic flows until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the final counts as one JSON line on stdout.")
@click.option("--seed", type=int, default=7, show_default=True,
              help="Seed of the synthetic audience (same seed, same events).")
@click.option("--customers", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--catalogue", "catalogue_size", type=click.IntRange(min=1), default=50,
              show_default=True, help="Content items in the catalogue.")
@click.option("--malformed-share", type=float, default=0.02, show_default=True,
              callback=_share, help="Share of deliberately malformed events.")
@click.option("--duplicate-share", type=float, default=0.01, show_default=True,
              callback=_share, help="Share of redelivered (duplicate) events.")
@click.option("--rate", type=click.FloatRange(min=0.1), default=200.0, show_default=True,
              help="Events per second without --events (live: event time starts now).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("relevanz-demo"), show_default=True,
              help="Where the demo keeps its store file and the broker log.")
@click.option("--stack", type=click.Choice(["embedded", "kafka-cassandra"]),
              default="embedded", show_default=True,
              help="embedded: Tansu broker and SQLite store. kafka-cassandra: Apache Kafka "
                   "and Apache Cassandra from Maven Central (needs Java 17 and Maven), "
                   "their data under --data-dir.")
@click.option("--visitors", type=click.IntRange(min=0), default=1500, show_default=True,
              help="Site visitors whose synthetic sessions (page views) go out besides "
                   "--events; the session models' hit rates and AUC are measured on them.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@one_line_errors
def demo(events: int | None, as_json: bool, seed: int, customers: int, catalogue_size: int,
         malformed_share: float, duplicate_share: float, rate: float, data_dir: Path,
         stack: str, visitors: int, quiet: bool) -> None:
    """Run everything on this machine: embedded broker, embedded store, worker, traffic.

    Needs no configuration. Prints where every event went: applied,
    recognised as a duplicate, or dead-lettered. With --stack kafka-cassandra
    the same runs on a real Kafka and Cassandra, started for the run.
    """
    from streams.sim.demo import DemoOptions, run_demo

    settings = _settings()
    logs.configure("warning" if settings.log_level == "info" else settings.log_level, "console")
    options = DemoOptions(events=events, seed=seed, customers=customers,
                          catalogue_size=catalogue_size, malformed_share=malformed_share,
                          duplicate_share=duplicate_share, rate=rate, data_dir=data_dir,
                          stack=stack, visitors=visitors)
    progress = (lambda _: None) if quiet else _stderr
    result = _run_until_signal(lambda stop: run_demo(settings, options, progress, stop,
                                                     announce=_stderr))
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(
            f"{result['events_in']} events consumed: {result['applied']} applied, "
            f"{result['duplicates']} duplicates, {result['dead_letters']} dead letters; "
            f"{result['decisions']} decisions, {result['send_triggers']} send triggers "
            f"in {result['elapsed_s']}s\n"
            f"consent: {result['skipped_without_consent']} events not used without consent "
            f"to profiling, {result['cancellations']} sends cancelled, "
            f"{result['erasures']} customers erased\n"
            f"campaigns: {result['proposals']} proposals, "
            f"{result['refused'].get('capped', 0)} sends capped"
            # Uplift only after a run of --events N (it is measured on a simulated audience).
            + "".join(_uplift_line(cid, c)
                      for cid, c in sorted(result.get("campaigns", {}).items()))
        )


def _uplift_line(campaign_id: str, campaign: dict[str, Any]) -> str:
    """One campaign's simulated click uplift over its holdout, for the demo's summary."""
    clicks = (campaign.get("uplift") or {}).get("clicks") or {}
    if clicks.get("difference") is None:
        return f"\n  {campaign_id}: no uplift yet ({campaign['treated']['sends']} sends)"
    return (f"\n  {campaign_id}: click uplift {clicks['difference']:+.3f} per send "
            f"(95% interval {clicks['low']:+.3f} to {clicks['high']:+.3f}; "
            f"{campaign['treated']['sends']} sends, {campaign['holdout']['sends']} held out; "
            "simulated reactions)")


@main.command()
@click.argument("source", type=click.File("rb"))  # decoded per line: a bad one is reported
@click.option("--topic", type=click.Choice(["clicks", "purchases", "consents", "profiles",
                                            "content"]),
              help="Every line is a bare event for this topic (instead of "
                   '{"topic": ..., "event": ...} lines).')
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@one_line_errors
def produce(source: Any, topic: str | None, quiet: bool) -> None:
    """Publish JSON-lines events from SOURCE (a file, or - for stdin) to the input topics.

    Each line is {"topic": "clicks", "event": {...}} (or a bare event with
    --topic). Events go out as msgpack, keyed by customer_id (content_id for
    content). A line that cannot be routed is reported with its number and
    the rest still go; invalid events are dead-lettered by the worker.
    Exits 1 when any line was bad or any delivery failed.
    """
    from streams.publish import Publisher, read_event_lines

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    publisher = Publisher(settings)
    sent = bad = 0
    size = _file_size(source)
    # A file gets a progress bar by bytes read; standard input, whose length is
    # unknown, a progress line every second.
    bar = (click.progressbar(length=size, label="produce", file=sys.stderr,
                             item_show_func=lambda counts: counts)
           if size and not quiet else None)
    last = time.monotonic()

    def lines() -> Iterator[bytes]:
        for line in source:
            if bar is not None:
                bar.update(len(line), f"{sent} sent, {publisher.report.delivered} delivered")
            yield line

    with bar if bar is not None else contextlib.nullcontext():
        for message in read_event_lines(lines(), default_topic=topic):
            if message.error:
                bad += 1
                _stderr(f"\nrelevanz produce: {message.error}" if bar else
                        f"relevanz produce: {message.error}")
                continue
            publisher.send(message.topic, message.key, message.value)
            sent += 1
            if bar is None and not quiet and time.monotonic() - last >= 1.0:
                _stderr(f"produce: {sent} sent, {publisher.report.delivered} delivered")
                last = time.monotonic()
    report = publisher.flush()
    summary = (f"produce: {sent} sent, {report.delivered} delivered, {report.failed} failed, "
               f"{bad} bad lines")
    if report.errors:
        summary += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(report.errors.items())) + ")"
    _stderr(summary)
    if bad or report.failed:
        sys.exit(1)


def _file_size(source: Any) -> int | None:
    """Size of ``source`` when it is a regular file (not a pipe or terminal)."""
    try:
        info = os.fstat(source.fileno())
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


@main.group(name="store")
def store_group() -> None:
    """Look after the store named by RELEVANZ_STORE_URL."""


@store_group.command(name="migrate")
@click.option("--drop-old-tables", is_flag=True,
              help="Cassandra: after copying the customers of the six customer tables of the "
                   "earlier layout into customer_state, drop those tables.")
@one_line_errors
def store_migrate(drop_old_tables: bool) -> None:
    """Create or upgrade the store's schema; safe to run any number of times.

    Cassandra: creates the keyspace of RELEVANZ_STORE_URL with
    RELEVANZ_CASSANDRA_REPLICATION (an existing keyspace keeps its
    replication) and the tables of schemas/cassandra.cql; workers refuse to
    start until this has run. A keyspace of the earlier layout (customers in
    six tables) has its customers copied into customer_state, every time while
    those tables exist; the copy keeps write times and TTLs, so it is
    idempotent and never overwrites a newer save. Embedded: creates or
    upgrades the tables in the file (workers also do that themselves).
    """
    from streams.store import open_store
    from streams.store.cassandra import CassandraStore

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    target = open_store(settings)
    if drop_old_tables and not isinstance(target, CassandraStore):
        raise click.BadParameter("only a Cassandra store has old tables to drop",
                                 param_hint="--drop-old-tables")

    async def run() -> None:
        try:
            if isinstance(target, CassandraStore):
                await target.migrate(drop_old_tables=drop_old_tables)
            else:
                await target.migrate()
        finally:
            await target.close()

    asyncio.run(run())
    click.echo(f"store {settings.store_url}: schema is up to date")


@main.group(name="customer")
def customer_group() -> None:
    """Data-subject requests about one customer."""


@customer_group.command(name="export")
@click.argument("customer_id")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-",
              show_default=True, help="Where to write the JSON (- for stdout).")
@one_line_errors
def customer_export(customer_id: str, output: Any) -> None:
    """Export everything held about CUSTOMER_ID as JSON (GDPR Art. 15 data access).

    Profile, consent decisions, interests and tags, purchase figures, the
    interaction history, pending sends and the ids of the events the ledger
    remembers; purchase probability and churn risk as of now from the saved
    outcome models. Exits 3 when nothing is held (never seen, or erased); exits 2,
    creating nothing, when an embedded store's file does not exist.
    """
    from streams.app import utc_now
    from streams.privacy import export_customer
    from streams.store import open_store

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    target = open_store(settings, existing=True)

    async def run() -> dict[str, Any] | None:
        from agents.pipeline.forecasts import Forecaster

        await target.open()
        try:
            # Predictions as of now, from the outcome models the workers saved last.
            forecaster = Forecaster()
            saved = await forecaster.load(target, quiet=True)
            return await export_customer(target, customer_id, utc_now(),
                                         forecaster if saved else None)
        finally:
            await target.close()

    data = asyncio.run(run())
    if data is None:
        click.echo("relevanz: nothing is held about this customer", err=True)
        sys.exit(3)
    json.dump(data, output, indent=2, sort_keys=True, ensure_ascii=False)
    output.write("\n")


@main.group(name="topics")
def topics_group() -> None:
    """Look after the topics on RELEVANZ_BROKER_URL."""


@topics_group.command(name="create")
@one_line_errors
def topics_create() -> None:
    """Create every missing Relevanz topic; check the partition count of the rest.

    Customer-keyed topics get RELEVANZ_PARTITIONS partitions, every topic
    RELEVANZ_REPLICATION replicas. Workers do the same when they start; run
    this first where producers may write before any worker has run, since a
    broker that creates topics on first use gives them its own partition count.
    """
    from schemas.topics import TOPICS
    from streams.topics import ensure_topics

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    ensure_topics(settings)
    click.echo(f"topics on {settings.broker_servers}: all {len(TOPICS)} present, "
               f"customer-keyed ones with {settings.partitions} partitions")


def _since(_: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise click.BadParameter(
            f"expected an ISO 8601 time with offset such as 2026-03-01T00:00:00+01:00, "
            f"got {value!r}")
    return parsed


@main.command()
@click.option("--since", callback=_since, metavar="TIME",
              help="Rebuild from the messages published at or after TIME (ISO 8601 with "
                   "offset, compared with Kafka message timestamps) instead of from the "
                   "earliest offset.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON line.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@one_line_errors
def replay(since: datetime | None, as_json: bool, quiet: bool) -> None:
    """Rebuild every projection in the store from the topics.

    Clears the customer state and event ledger of RELEVANZ_STORE_URL, reads
    every input topic from the beginning with a consumer group of its own,
    applies each event exactly as live processing does, without publishing
    outputs again, and stops once it has consumed what the topics held when
    it started. Stop the workers first: they would write to the same store.
    """
    from streams.cli.replay import run_replay

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    progress = (lambda _: None) if quiet else _stderr
    result = asyncio.run(run_replay(settings, progress, since=since))
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(f"replayed {result['events_in']} messages: {result['applied']} applied, "
                   f"{result['duplicates']} duplicates, {result['dead_letters']} invalid, "
                   f"in {result['elapsed_s']}s")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--cutoff", callback=_since, metavar="TIME", required=True,
              help="End of the calibration period (ISO 8601 with offset): purchases before "
                   "it are replayed, the predictions are read as of it.")
@click.option("--holdout-weeks", type=click.IntRange(min=1), required=True,
              help="Length of the holdout period after the cutoff.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON line.")
@click.option("--seed", type=int, default=7, show_default=True,
              help="Seed of the bootstrap intervals.")
@click.option("--order", type=click.Choice(["time", "consents-first", "random"]),
              default="time", show_default=True,
              help="Read order of the replay: all events in event-time order, every "
                   "consent before the purchases (as when one topic is read ahead), or the "
                   "two topics interleaved at random (seeded by --seed); each topic is "
                   "one partition of the low watermark the engine's clock follows.")
@click.option("--through-worker", is_flag=True,
              help="Publish to an embedded broker, let a worker apply the events and read "
                   "the predictions back through GET /v1/customers/{id}?as_of=CUTOFF.")
@click.option("--customers", "limit", type=click.IntRange(min=1), default=None,
              help="Only the first N customers of the log (by id).")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@one_line_errors
def evaluate(file: Path, cutoff: datetime, holdout_weeks: int, as_json: bool, seed: int,
             order: str, through_worker: bool, limit: int | None, quiet: bool) -> None:
    """Score the served predictions on a real transaction log, next to baselines.

    FILE is a CSV with the header customer_id,occurred_at,amount,quantity
    (ISO 8601 times with an offset). The purchases before --cutoff are
    replayed through the engine in event-time order (consent to profiling
    at each customer's first purchase, embedded store in a temporary
    directory); the purchase probability and churn risk as of the cutoff
    are scored against who buys in the holdout (ROC AUC with a bootstrap
    interval, calibration over the model's horizon), next to recency alone,
    an RFM logistic regression and BG/NBD fitted in the same run. Needs
    the evaluate extra: pip install 'relevanz[evaluate]'.
    """
    from streams.sim.evaluation import evaluate as run_evaluation

    settings = _settings()
    logs.configure("warning", settings.log_format)
    progress = (lambda _: None) if quiet else _stderr
    result = run_evaluation(file, cutoff, holdout_weeks, settings, progress, seed=seed,
                            order=order, through_worker=through_worker, limit=limit)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(f"{result['customers']} customers, {result['buyers']} buy in the holdout")
    click.echo(f"purchase AUC {result['purchase_auc']} (95% {result['purchase_auc_ci']}), "
               f"expected {result['purchase_expected']} vs {result['purchase_actual']} buyers "
               f"within {result['purchase_horizon_days']} days")
    click.echo(f"churn AUC (inverted) {result['churn_auc']}, expected "
               f"{result['churn_expected']} vs {result['churn_actual']} quiet "
               f"{result['churn_horizon_days']} days")
    click.echo(f"baselines: recency {result['recency_auc']}, RFM logistic {result['rfm_auc']}, "
               f"BG/NBD {result['bgnbd_auc']}")
    for outcome in ("purchase", "churn"):
        # What the model learnt, strongest first (weights on the scaler's standard units).
        weights = sorted(result[f"{outcome}_weights"].items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        click.echo(f"{outcome} weights: " + ", ".join(f"{k} {v:+.3f}" for k, v in weights))


@main.command("cdnow-csv")
@click.argument("output", type=click.File("w", encoding="utf-8"), default="-")
@click.option("--ids", type=click.Choice(["odd", "even", "all"]), default="odd",
              show_default=True, help="Which customers to write, by the parity of their id.")
@one_line_errors
def cdnow_csv(output: Any, ids: str) -> None:
    """Write the CDNOW purchase log as the CSV that 'relevanz evaluate' reads.

    Reads CDNOW_master.txt from the installed lifetimes package (the
    evaluate extra) and merges a customer's purchases of one day. Evaluate
    with: relevanz evaluate FILE --cutoff 1997-10-01T00:00:00+00:00
    --holdout-weeks 39 (calibration to 1997-09-30, as Fader, Hardie & Lee 2005).
    """
    from streams.sim.evaluation import write_cdnow

    rows = write_cdnow(output, ids)
    _stderr(f"wrote {rows} purchases of the customers with {ids} ids")



main.add_command(bench)
main.add_command(status)
