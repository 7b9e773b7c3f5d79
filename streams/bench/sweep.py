"""``relevanz bench --sweep``: the pipeline's cost curves over audience and catalogue size.

For every (customers, catalogue) combination the sweep generates
``events`` synthetic events (in a process of its own) into a topic set of
its own on one embedded broker and measures the full pipeline on them with a
fresh store, in a worker process of its own whose peak RSS the row reports.
The raw and bare-Faust references are measured once, on the first point's
data.  With ``repeats`` above one, each point's pipeline runs that many
times on the same events (a consumer group and a store of its own each
time) and the row gives the median run, with the slowest and fastest beside
it: on a shared machine one run per point moves by more than the trend the
sweep is meant to show.
Rows go to ``bench-sweep.csv`` as each point finishes (so an interrupted
sweep keeps what it measured), and a plot to ``bench-sweep.png`` when
matplotlib is installed.
"""

from __future__ import annotations

import csv
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from streams.bench.options import BenchOptions, bench_settings, traffic_config
from streams.bench.stages import (
    PipelineResult,
    Progress,
    Throughput,
    TrafficProcess,
    measure_faust,
    measure_pipeline_apart,
    measure_raw,
)
from streams.settings import Settings

COLUMNS = ("customers", "catalogue", "events", "pipeline_events_per_s", "pipeline_vs_faust",
           "pipeline_vs_raw", "faust_events_per_s", "raw_events_per_s", "generate_s",
           "store_mb", "store_customers", "peak_rss_mb", "repeats",
           "pipeline_min_events_per_s", "pipeline_max_events_per_s")


async def run_sweep(settings: Settings, options: BenchOptions, customers: list[int],
                    catalogues: list[int], progress: Progress, repeats: int = 1
                    ) -> dict[str, Any]:
    """Measure every combination (``repeats`` pipeline runs each); returns the rows and
    where the CSV and PNG went."""

    from streams.broker import EmbeddedBroker

    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "bench-sweep.csv", out / "bench-sweep.png"
    rows: list[dict[str, Any]] = []
    raw = faust = None
    with EmbeddedBroker(out / "broker.log") as broker, csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        points = [(c, k) for c in customers for k in catalogues]
        for i, (c, k) in enumerate(points, start=1):
            label = f"point {i}/{len(points)} ({c} customers, {k} items)"
            point = replace(options, customers=c, catalogue_size=k)
            stage = bench_settings(settings, broker.bootstrap_servers, options.partitions,
                                   prefix=f"bench-c{c}-k{k}.", group=f"relevanz-bench-{i}")
            progress(f"{label}: generating and publishing {options.events} events")
            started = time.perf_counter()
            with TrafficProcess(traffic_config(point, options.events), options.events,
                                options.log_level) as traffic:
                _, generate_s = await traffic.publish(stage, options.events)
            progress(f"{label}: published in {time.perf_counter() - started:.0f} s")
            n, stall = options.events, options.stall_timeout_s
            if raw is None or faust is None:
                raw = await measure_raw(stage, n, progress, stall)
                faust = await measure_faust(stage, n, progress, stall)
            runs: list[tuple[PipelineResult, Path]] = []
            for r in range(1, repeats + 1):
                store_path = out / (f"sweep-store-{i}.db" if repeats == 1
                                    else f"sweep-store-{i}-{r}.db")
                group = stage.with_(consumer_group=f"{stage.consumer_group}-run{r}")
                result = await measure_pipeline_apart(
                    group, n, store_path, stall_timeout_s=stall, verbose=options.verbose,
                    log_level=options.log_level, customers=c)
                runs.append((result, store_path))
                if repeats > 1:
                    progress(f"{label}: run {r}/{repeats}: "
                             f"{result.throughput.events_per_s:,.0f} events/s")
            rows.append(_row(c, k, n, runs, faust, raw, generate_s))
            writer.writerow(rows[-1])
            f.flush()
            progress(f"{label}: {rows[-1]['pipeline_events_per_s']:,.0f} events/s"
                     + (" (median)" if repeats > 1 else ""))
    png = plot(rows, png_path, progress)
    return {"csv": str(csv_path), "png": str(png) if png else None, "rows": rows}


def _row(customers: int, catalogue: int, events: int,
         runs: list[tuple[PipelineResult, Path]], faust: Throughput, raw: Throughput,
         generate_s: float) -> dict[str, Any]:
    """One point's row: the median run (the upper one of an even count), its store and RSS.

    >>> from types import SimpleNamespace as NS
    >>> def run(rate: float) -> tuple[Any, Path]:
    ...     result = NS(throughput=NS(events_per_s=rate), store_customers=9, peak_rss_mb=rate / 10)
    ...     return result, Path("no-such-store.db")
    >>> row = _row(10, 5, 100, [run(300.0), run(100.0), run(200.0)], NS(events_per_s=400.0),
    ...            NS(events_per_s=800.0), 0.1)
    >>> (row["pipeline_events_per_s"], row["pipeline_min_events_per_s"],
    ...  row["pipeline_max_events_per_s"], row["pipeline_vs_faust"], row["peak_rss_mb"])
    (200.0, 100.0, 300.0, 0.5, 30.0)
    """
    ordered = sorted(runs, key=lambda run: run[0].throughput.events_per_s)
    pipeline, store_path = ordered[len(ordered) // 2]
    rates = [run.throughput.events_per_s for run, _ in ordered]
    p = pipeline.throughput.events_per_s
    store_bytes = sum(f.stat().st_size for f in store_path.parent.glob(f"{store_path.name}*"))
    return {
        "customers": customers, "catalogue": catalogue, "events": events,
        "pipeline_events_per_s": round(p, 1),
        "pipeline_vs_faust": round(p / faust.events_per_s, 3) if faust.events_per_s else 0.0,
        "pipeline_vs_raw": round(p / raw.events_per_s, 3) if raw.events_per_s else 0.0,
        "faust_events_per_s": round(faust.events_per_s, 1),
        "raw_events_per_s": round(raw.events_per_s, 1),
        "generate_s": round(generate_s, 1),
        "store_mb": round(store_bytes / 1e6, 1),
        "store_customers": pipeline.store_customers,
        # The worst run's: the memory a worker needs, whichever run was the median.
        "peak_rss_mb": round(max(run.peak_rss_mb for run, _ in runs), 1),
        "repeats": len(runs),
        "pipeline_min_events_per_s": round(rates[0], 1),
        "pipeline_max_events_per_s": round(rates[-1], 1),
    }


def plot(rows: list[dict[str, Any]], path: Path, progress: Progress) -> Path | None:
    """Pipeline events/s over customers, one line per catalogue size; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        progress(f"matplotlib is not installed: skipped {path.name}; the CSV has every number "
                 "(pip install matplotlib for the plot)")
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for catalogue in sorted({r["catalogue"] for r in rows}):
        line = sorted((r["customers"], r["pipeline_events_per_s"],
                       r["pipeline_min_events_per_s"], r["pipeline_max_events_per_s"])
                      for r in rows if r["catalogue"] == catalogue)
        ys = [y for _, y, _, _ in line]
        # Bars from the slowest to the fastest run (none with one run per point).
        ax.errorbar([x for x, _, _, _ in line], ys, marker="o", capsize=3,
                    yerr=[[y - lo for y, (_, _, lo, _) in zip(ys, line, strict=True)],
                          [hi - y for y, (_, _, _, hi) in zip(ys, line, strict=True)]],
                    label=f"{catalogue} content items")
    if rows:
        ceiling = rows[0]["faust_events_per_s"]
        ax.axhline(ceiling, linestyle="--", color="grey", label="bare Faust agent")
        ax.axhline(ceiling / 2, linestyle=":", color="grey", label="target: 50% of Faust")
    ax.set_xscale("log")
    ax.set_xlabel("customers")
    repeats = max((r["repeats"] for r in rows), default=1)
    ax.set_ylabel("pipeline events/s" + (f" (median of {repeats}, range)" if repeats > 1
                                         else ""))
    ax.set_ylim(bottom=0)
    ax.set_title("Relevanz pipeline throughput (embedded broker and store)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def describe_sweep(outcome: dict[str, Any]) -> str:
    """The sweep's table for a person to read."""
    ranged = any(r["repeats"] > 1 for r in outcome["rows"])
    lines = [f"{'customers':>10} {'catalogue':>9} {'events/s':>10} {'vs faust':>8} "
             f"{'store MB':>8}" + (f" {'slowest-fastest':>16}" if ranged else "")]
    lines += [f"{r['customers']:>10} {r['catalogue']:>9} {r['pipeline_events_per_s']:>10,.0f} "
              f"{r['pipeline_vs_faust']:>8.0%} {r['store_mb']:>8}"
              + (f" {r['pipeline_min_events_per_s']:>7,.0f}-{r['pipeline_max_events_per_s']:<8,.0f}"
                 if ranged else "")
              for r in outcome["rows"]]
    lines.append(f"wrote {outcome['csv']}" + (f" and {outcome['png']}" if outcome["png"] else ""))
    return "\n".join(lines)
