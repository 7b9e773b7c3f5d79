"""``relevanz bench``: how fast the engine is, next to what Kafka and Faust allow.

One invocation starts the embedded broker, generates synthetic traffic once
(:class:`streams.sim.traffic.TrafficGenerator`, in a process of its own),
publishes it once, and reads that same data with three stages
(:mod:`streams.bench.stages`): a confluent-kafka consumer (the raw limit), a
bare Faust agent (the framework ceiling) and the full pipeline as
:func:`streams.app.build_worker` wires it, in a process of its own like one
deployed worker, so the benchmark grows with every agent added and the peak
RSS it reports is that worker's.  Throughput counts from the first event a
stage consumes to the last; consumer-group joins are left out.

Then the still-running pipeline gets fresh events of the same stream at a
fixed offered load, half its measured maximum (``--load``), and the latency from
publishing each event to the batch holding it being handled (applied,
stored, every decision and trigger it caused sent) is recorded: event-to-
decision (``p50_ms``…) over every valid event, and (``decided_p50_ms``…)
over the events that did cause a decision, which become rare once a
steady audience has its tags (follow-ups start on a new tag).

With ``--stack kafka-cassandra`` every stage reads from Apache Kafka and the
pipeline writes to Apache Cassandra, both started fresh for the run
(:mod:`streams.servers`), and the result adds each JVM's start time and
resident memory: the same ratios, against limits measured on the same broker.

``relevanz bench --sweep`` (:mod:`streams.bench.sweep`) repeats the pipeline
stage over audience and catalogue sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from streams import logs
from streams.bench.decide import TARGET_P99_MS as TARGET_DECIDE_P99_MS
from streams.bench.decide import DecideLatency, measure_decide
from streams.bench.options import BenchOptions, bench_settings, traffic_config
from streams.bench.stages import (
    PipelineResult,
    Progress,
    Throughput,
    TrafficProcess,
    fresh_count,
    measure_faust,
    measure_faust_latency,
    measure_pipeline_apart,
    measure_raw,
    read_spool,
)
from streams.cli.one_line import one_line_errors
from streams.errors import ConfigError
from streams.servers.jvm import JvmServer
from streams.settings import Settings

#: What ``p50_ms``, ``p95_ms`` and ``p99_ms`` measure.
LATENCY_MEASURES = ("event-to-decision: publish to the batch holding the event handled "
                    "(applied, stored, its decisions and triggers sent)")
#: The issue's targets: p99 event-to-decision at half load; peak RSS of one worker.
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 400.0
#: The issue's target: the full pipeline reaches this share of the bare-Faust ceiling.
TARGET_PIPELINE_VS_FAUST = 0.5
#: Events the decision-quality evaluation runs over (at most; fewer when the bench has fewer).
CTR_EVENTS = 30_000


async def run_bench(settings: Settings, options: BenchOptions, progress: Progress
                    ) -> dict[str, Any]:
    """Measure raw, Faust and pipeline on the same data, then latency; returns the result."""
    n = options.events
    options.out_dir.mkdir(parents=True, exist_ok=True)
    spool = options.out_dir / "fresh-events.msgpack"
    with bench_stack(options, progress) as stack, \
            TrafficProcess(traffic_config(options, n), 3 * n,
                           options.log_level) as traffic:
        settings = bench_settings(settings, stack.servers, options.partitions,
                                  embedded=options.stack == "embedded")
        progress(f"generating and publishing {n} events to {settings.partitions} partitions: "
                 f"{options.customers} customers, {options.catalogue_size} content items, "
                 f"seed {options.seed}")
        await traffic.publish(settings, n)
        await traffic.spool(spool, 2 * n)  # the latency phases' fresh events
        stall = options.stall_timeout_s
        raw = await measure_raw(settings, n, progress, stall)
        progress(f"raw: {raw.events_per_s:,.0f} events/s")
        faust = await measure_faust(settings, n, progress, stall)
        progress(f"faust: {faust.events_per_s:,.0f} events/s")
        pipeline = await measure_pipeline_apart(
            settings, n, options.out_dir / "store.db", stall_timeout_s=stall,
            verbose=options.verbose, log_level=options.log_level, spool=spool,
            latency_s=options.latency_s, customers=options.customers, load=options.load,
            store_url=stack.store_url)
        # POST /v1/decide on the store the pipeline filled, by the group that consumed it
        # all (before anything more is published, so the worker has nothing to catch up on).
        decide, session = await measure_decide(
            settings.with_(consumer_group=f"{settings.consumer_group}-pipeline"),
            options.out_dir / "store.db", progress, seconds=options.latency_s,
            store_url=stack.store_url)
        # The framework's latency floor: bare Faust at the same load, on the next fresh events.
        rate = pipeline.throughput.events_per_s * options.load
        k = fresh_count(rate, n, options.latency_s)
        progress(f"faust latency: {k} fresh events at {rate:,.0f} events/s")
        floor = await measure_faust_latency(settings, k, read_spool(spool, k, skip=k), rate,
                                            progress, stall)
        progress(f"decide: p99 {decide.p99_ms:.1f} ms at {decide.rate:,.0f} requests/s; "
                 f"for a visitor's session p99 {session.p99_ms:.1f} ms")
        jvms = stack.jvm_figures()
    result = result_line(options, settings.partitions, raw, faust, pipeline) | jvms
    result |= {"faust_p50_ms": round(floor.p50_ms, 1), "faust_p95_ms": round(floor.p95_ms, 1),
               "faust_p99_ms": round(floor.p99_ms, 1),
               "faust_latency_measures": "bare Faust agent at the same offered load, "
                                         "batched like the worker: publish to batch decoded"}
    result |= _decide_figures(decide, session)
    # Decision quality on the same audience (streams/sim/simulation.py), after the timings.
    from streams.sim.simulation import evaluate_policies

    events = min(n, CTR_EVENTS)
    progress(f"decision quality over {events} events (engine, random, most-popular)")
    quality = await asyncio.to_thread(
        evaluate_policies, seed=options.seed, events=events, warmup=events // 6,
        customers=options.customers, catalogue_size=options.catalogue_size)
    return {**result, **quality}


@dataclass
class BenchStack:
    """The broker the stages read from and the store the pipeline writes to."""

    servers: str
    #: None: the embedded store in the out dir.
    store_url: str | None = None
    jvms: list[JvmServer] = field(default_factory=list)

    def jvm_figures(self) -> dict[str, Any]:
        """Each JVM's start time and resident memory (now, at the end of the run, and peak)."""
        figures: dict[str, Any] = {}
        for server in self.jvms:
            figures[f"{server.name}_start_s"] = server.started_in_s
            memory = server.memory_mb()
            if memory is not None:
                figures[f"{server.name}_rss_mb"], figures[f"{server.name}_peak_rss_mb"] = memory
        return figures


@contextlib.contextmanager
def bench_stack(options: BenchOptions, progress: Progress) -> Iterator[BenchStack]:
    """The embedded broker, or Apache Kafka and Cassandra started fresh in the out dir."""
    if options.stack == "embedded":
        from streams.broker import EmbeddedBroker

        with EmbeddedBroker(options.out_dir / "broker.log") as broker:
            progress(f"embedded broker on {broker.bootstrap_servers} "
                     f"(log {options.out_dir / 'broker.log'})")
            yield BenchStack(broker.bootstrap_servers)
        return
    from streams.servers.cassandra import CassandraServer
    from streams.servers.kafka import KafkaServer

    kafka_dir, cassandra_dir = options.out_dir / "kafka", options.out_dir / "cassandra"
    for old in (kafka_dir, cassandra_dir):  # the ledger of another run would make duplicates
        shutil.rmtree(old, ignore_errors=True)
    progress("starting Apache Kafka and Apache Cassandra (Java 17, Maven)")
    with KafkaServer(kafka_dir) as kafka, CassandraServer(cassandra_dir) as cassandra:
        progress(f"Apache Kafka on {kafka.bootstrap_servers} (ready in {kafka.started_in_s}s), "
                 f"Apache Cassandra on {cassandra.hosts} (ready in {cassandra.started_in_s}s)")
        yield BenchStack(kafka.bootstrap_servers, cassandra.store_url("relevanz_bench"),
                         [kafka, cassandra])


def result_line(options: BenchOptions, partitions: int, raw: Throughput, faust: Throughput,
                pipeline: PipelineResult) -> dict[str, Any]:
    """The ``--json`` line."""
    p = pipeline.throughput.events_per_s
    result: dict[str, Any] = {
        "raw_events_per_s": round(raw.events_per_s, 1),
        "faust_events_per_s": round(faust.events_per_s, 1),
        "pipeline_events_per_s": round(p, 1),
        "pipeline_vs_faust": round(p / faust.events_per_s, 3) if faust.events_per_s else 0.0,
        "pipeline_vs_raw": round(p / raw.events_per_s, 3) if raw.events_per_s else 0.0,
        "pipeline_agents": pipeline.agents,
        "throughput_measures": "first to last event consumed; consumer-group join excluded",
        "peak_rss_mb": round(pipeline.peak_rss_mb, 1),
        "rss_measures": "peak RSS of the pipeline worker's process",
        "store_customers": pipeline.store_customers,
        "events": options.events, "customers": options.customers,
        "catalogue": options.catalogue_size, "partitions": partitions,
        "store": "cassandra" if options.stack == "kafka-cassandra" else options.store,
        "broker": "kafka" if options.stack == "kafka-cassandra" else "embedded",
        "seed": options.seed,
    }
    if pipeline.latency is not None:
        lat = pipeline.latency
        result |= {"p50_ms": round(lat.applied.p50_ms, 1),
                   "p95_ms": round(lat.applied.p95_ms, 1),
                   "p99_ms": round(lat.applied.p99_ms, 1), "latency_measures": LATENCY_MEASURES,
                   "latency_events": lat.applied.events,
                   "decided_p50_ms": round(lat.decision.p50_ms, 1),
                   "decided_p95_ms": round(lat.decision.p95_ms, 1),
                   "decided_p99_ms": round(lat.decision.p99_ms, 1),
                   "decided_events": lat.decision.events,
                   "latency_load": options.load,
                   "latency_offered_events_per_s": round(lat.offered_per_s, 1),
                   "latency_applied_events_per_s": round(lat.applied_per_s, 1)}
    return result


def describe(result: dict[str, Any]) -> str:
    """The result for a person to read."""
    target = "meets" if result["pipeline_vs_faust"] >= TARGET_PIPELINE_VS_FAUST else "misses"
    lines = [
        f"raw confluent-kafka consumer + decode  {result['raw_events_per_s']:>10,.0f} events/s",
        f"bare Faust agent + decode              {result['faust_events_per_s']:>10,.0f} events/s",
        f"full pipeline ({', '.join(result['pipeline_agents'])})"
        .ljust(39) + f"{result['pipeline_events_per_s']:>10,.0f} events/s",
        f"pipeline = {result['pipeline_vs_faust']:.0%} of bare Faust ({target} the "
        f"{TARGET_PIPELINE_VS_FAUST:.0%} target), {result['pipeline_vs_raw']:.1%} of raw",
    ]
    if "decide_p99_ms" in result:
        lines.append(
            f"POST /v1/decide at {result['decide_requests_per_s']:,.0f} requests/s "
            f"({result['decide_requests']} requests, {result['decide_errors']} failed): "
            f"p50 {result['decide_p50_ms']:.1f} ms, p95 {result['decide_p95_ms']:.1f} ms, "
            f"p99 {result['decide_p99_ms']:.1f} ms (target {TARGET_DECIDE_P99_MS:.0f} ms)")
    if "p50_ms" in result:
        lines += [
            f"latency at {result['latency_offered_events_per_s']:,.0f} events/s offered "
            f"({result['latency_load']:.0%} of the pipeline's maximum):",
            f"  event-to-decision, every event ({result['latency_events']} events): "
            f"p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
            f"p99 {result['p99_ms']:.0f} ms (target {TARGET_P99_MS:.0f} ms)",
            f"  events that caused a decision ({result['decided_events']}): "
            f"p50 {result['decided_p50_ms']:.0f} ms, p95 {result['decided_p95_ms']:.0f} ms, "
            f"p99 {result['decided_p99_ms']:.0f} ms"]
    if "faust_p99_ms" in result:
        lines.append(f"  bare Faust agent, same load (the floor): "
                     f"p50 {result['faust_p50_ms']:.0f} ms, p95 {result['faust_p95_ms']:.0f} ms, "
                     f"p99 {result['faust_p99_ms']:.0f} ms")
    for name in ("kafka", "cassandra"):
        if f"{name}_start_s" in result:
            lines.append(f"{name}: ready in {result[f'{name}_start_s']} s, RSS "
                         f"{result.get(f'{name}_rss_mb', 0):,.0f} MB at the end "
                         f"(peak {result.get(f'{name}_peak_rss_mb', 0):,.0f} MB)")
    lines += [f"peak RSS of the pipeline worker {result['peak_rss_mb']:,.0f} MB "
              f"(target {TARGET_RSS_MB:.0f} MB), {result['store_customers']:,} customers "
              f"in its store",
              f"throughput: {result['throughput_measures']}"]
    return "\n".join(lines)


def _int_list(_: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"expected whole numbers from 1 up, separated by commas, "
                                 f"got {value!r}")
    return numbers


@click.command()
@click.option("--events", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Events generated and published once, then read by every stage.")
@click.option("--customers", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Size of the synthetic audience, all of it in the pipeline's store before "
                   "it starts (master data each, as a CRM import leaves it).")
@click.option("--catalogue", "catalogue_size", type=click.IntRange(min=1), default=200,
              show_default=True, help="Content items in the catalogue.")
@click.option("--partitions", type=click.IntRange(1, 1024), default=None,
              help="Partitions per topic [default: RELEVANZ_PARTITIONS].")
@click.option("--store", default="embedded", show_default=True,
              help="Store the pipeline writes to (only embedded for now; --stack "
                   "kafka-cassandra runs it on Cassandra).")
@click.option("--stack", type=click.Choice(["embedded", "kafka-cassandra"]),
              default="embedded", show_default=True,
              help="embedded: the Tansu broker and the SQLite store. kafka-cassandra: Apache "
                   "Kafka for every stage and Apache Cassandra for the pipeline, started "
                   "fresh under --out-dir for the run (needs Java 17 and Maven); their start "
                   "time and memory are reported.")
@click.option("--seed", type=int, default=7, show_default=True,
              help="Seed of the synthetic traffic (same seed, same events).")
@click.option("--latency-seconds", "latency_s", type=click.FloatRange(min=0.1), default=10.0,
              show_default=True, help="How long the fixed offered load for latency lasts.")
@click.option("--load", type=click.FloatRange(min=0.01, max=1.0), default=0.5, show_default=True,
              help="Offered load of the latency phase, as a share of the pipeline's measured "
                   "maximum.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("relevanz-bench"), show_default=True,
              help="Where the broker log, the store files and the sweep's CSV and PNG go.")
@click.option("--sweep", is_flag=True,
              help="Cost curves: the pipeline over every customers x catalogue combination; "
                   "writes bench-sweep.csv (and bench-sweep.png with matplotlib).")
@click.option("--sweep-customers", default="10000,100000,1000000", show_default=True,
              callback=_int_list, help="Audience sizes of the sweep.")
@click.option("--sweep-catalogue", default="20,200,2000", show_default=True,
              callback=_int_list, help="Catalogue sizes of the sweep.")
@click.option("--sweep-events", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Events per sweep point (generating them for 1M customers takes ~1 min).")
@click.option("--sweep-repeats", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Pipeline runs per sweep point, on the same events: the CSV and plot give "
                   "the median, with the slowest and fastest run beside it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def bench(**kwargs: Any) -> None:
    """Measure throughput and latency: raw Kafka limit, bare-Faust ceiling, full pipeline.

    Starts the embedded broker, publishes --events synthetic events once and
    reads them with a confluent-kafka consumer, a bare Faust agent and the
    full worker (in a process of its own, whose peak RSS is reported), each
    from the start in its own consumer group. Throughput counts from the
    first event consumed to the last (group joins excluded). Latency is then
    measured at half the pipeline's maximum (--load), from publishing an event to its
    batch being handled: applied, stored and every decision and trigger it
    caused sent (event-to-decision), next to a bare Faust agent's at the same
    load. POST /v1/decide is measured at 200 requests/s. Progress goes to
    stderr. With --stack kafka-cassandra all of it runs on Apache Kafka and
    Apache Cassandra, started for the run.
    """

    one_line_errors(_bench)(**kwargs)


def _bench(events: int, customers: int, catalogue_size: int, partitions: int | None,
           store: str, stack: str, seed: int, latency_s: float, load: float, as_json: bool,
           out_dir: Path,
           sweep: bool,
           sweep_customers: list[int], sweep_catalogue: list[int], sweep_events: int,
           sweep_repeats: int, quiet: bool) -> None:
    settings = Settings.from_env()
    log_level = "warning" if settings.log_level == "info" else settings.log_level
    logs.configure(log_level, "console")
    progress: Progress = (lambda _: None) if quiet else (lambda m: click.echo(m, err=True))
    options = BenchOptions(events=sweep_events if sweep else events, customers=customers,
                           catalogue_size=catalogue_size, partitions=partitions, store=store,
                           seed=seed, latency_s=latency_s, load=load, out_dir=out_dir,
                           verbose=not quiet, log_level=log_level, stack=stack)
    if sweep and stack != "embedded":
        raise ConfigError("--sweep runs on the embedded stack only; leave out --stack")
    if sweep:
        from streams.bench.sweep import describe_sweep, run_sweep

        outcome = asyncio.run(run_sweep(settings, options, sweep_customers, sweep_catalogue,
                                        progress, repeats=sweep_repeats))
        click.echo(json.dumps(outcome, sort_keys=True) if as_json else describe_sweep(outcome))
        return
    result = asyncio.run(run_bench(settings, options, progress))
    click.echo(json.dumps(result, sort_keys=True) if as_json else describe(result))


def _decide_figures(decide: DecideLatency, session: DecideLatency) -> dict[str, float | int]:
    """The JSON figures of the decide runs: customers, then a visitor's session."""
    return {"decide_requests_per_s": decide.rate, "decide_requests": decide.requests,
            "decide_errors": decide.errors, "decide_p50_ms": round(decide.p50_ms, 1),
            "decide_p95_ms": round(decide.p95_ms, 1), "decide_p99_ms": round(decide.p99_ms, 1),
            "decide_max_ms": round(decide.max_ms, 1),
            # An anonymous visitor's session after one page view, at the same rate.
            "session_decide_errors": session.errors,
            "session_decide_p50_ms": round(session.p50_ms, 1),
            "session_decide_p99_ms": round(session.p99_ms, 1)}
