"""``relevanz bench`` as a user runs it: tiny runs, checked for shape and consistency.

These are not performance tests: nothing here asserts that anything is fast.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RELEVANZ = str(Path(sys.executable).parent / "relevanz")
#: Starts its own Kafka and Cassandra (one to two minutes on 2 cores): opt-in.
SLOW = pytest.mark.skipif(os.environ.get("RELEVANZ_SLOW_TESTS") != "1",
                          reason="starts Kafka and Cassandra of its own; set RELEVANZ_SLOW_TESTS=1")


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELEVANZ, "bench", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_bench_measures_the_three_stages_on_the_same_data(tmp_path: Path) -> None:
    done = bench("--events", "3000", "--customers", "500", "--catalogue", "20",
                 "--latency-seconds", "2", "--load", "0.25", "--json", "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    rates = ("raw_events_per_s", "faust_events_per_s", "pipeline_events_per_s")
    for key in (*rates, "p50_ms", "p95_ms", "p99_ms", "peak_rss_mb", "decided_p99_ms",
                "latency_offered_events_per_s", "latency_events", "decided_events",
                "store_customers"):
        assert result[key] > 0, key
    raw, faust, pipeline = (result[k] for k in rates)
    assert result["pipeline_vs_faust"] == pytest.approx(pipeline / faust, abs=0.001)
    assert result["pipeline_vs_raw"] == pytest.approx(pipeline / raw, abs=0.001)
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["decided_p50_ms"] <= result["decided_p95_ms"] <= result["decided_p99_ms"]
    # The framework's floor at the same load, measured in the same run.
    assert 0 < result["faust_p50_ms"] <= result["faust_p95_ms"] <= result["faust_p99_ms"]
    assert "faust latency:" in done.stderr
    assert result["latency_measures"].startswith("event-to-decision: publish to the batch")
    # --load 0.25: a quarter of the measured maximum is offered (the publisher paces it).
    assert result["latency_load"] == 0.25
    offered = result["latency_offered_events_per_s"]
    assert offered == pytest.approx(pipeline * 0.25, rel=0.2)
    # Events that caused a decision are a share of every valid fresh event.
    assert result["decided_events"] < result["latency_events"] <= 3000
    # The worker ran in a process of its own (the generator and the bench's own stages
    # are not in its peak RSS), on a store preloaded with the whole audience.
    # (An erasure in the stream deletes its customer.)
    assert 450 <= result["store_customers"] <= 500
    assert "preload: the store holds 500 customers" in done.stderr
    assert "ingest" in result["pipeline_agents"]
    assert (result["events"], result["customers"], result["catalogue"]) == (3000, 500, 20)
    assert result["store"] == "embedded"
    # Decision quality on the same audience: three policies, one warm-up.
    for key in ("ctr_engine", "ctr_random", "ctr_popular"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["ctr_warmup"] == 500
    assert result["ctr_opportunities"] > 0
    assert "decision quality over 3000 events" in done.stderr
    assert "raw:" in done.stderr
    # POST /v1/decide at a fixed rate: every request answered, percentiles in order.
    assert result["decide_requests"] == 400  # 200/s for the two latency seconds
    assert result["decide_errors"] == 0
    assert 0 < result["decide_p50_ms"] <= result["decide_p95_ms"] <= result["decide_p99_ms"]
    assert "decide: p99" in done.stderr
    # The same for an anonymous visitor's session after one page view.
    assert result["session_decide_errors"] == 0
    assert 0 < result["session_decide_p50_ms"] <= result["session_decide_p99_ms"]
    assert "pipeline:" in done.stderr  # progress goes to stderr, the result alone to stdout


def test_sweep_writes_one_csv_row_per_combination(tmp_path: Path) -> None:
    done = bench("--sweep", "--sweep-customers", "100,200", "--sweep-catalogue", "5",
                 "--sweep-events", "1000", "--sweep-repeats", "2", "--json",
                 "--out-dir", str(tmp_path), timeout=240)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    with (tmp_path / "bench-sweep.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["customers"], r["catalogue"], r["events"]) for r in rows] == [
        ("100", "5", "1000"), ("200", "5", "1000")]
    for row in rows:
        assert float(row["pipeline_events_per_s"]) > 0
        # Two pipeline runs on the same events: the row is the median (here the faster).
        assert row["repeats"] == "2"
        low, high = float(row["pipeline_min_events_per_s"]), float(row["pipeline_max_events_per_s"])
        assert 0 < low <= float(row["pipeline_events_per_s"]) == high
        assert float(row["faust_events_per_s"]) > 0
        assert float(row["peak_rss_mb"]) > 0
        # The audience, preloaded, less the customers the stream erased.
        # (Each audience size is written once and copied for every catalogue size.)
        assert 0.9 * int(row["customers"]) <= int(row["store_customers"]) <= int(row["customers"])
    assert len(outcome["rows"]) == 2
    assert done.stderr.count(": run 2/2: ") == 2
    if outcome["png"] is None:
        assert "matplotlib is not installed" in done.stderr
    else:
        assert Path(outcome["png"]).stat().st_size > 0


def test_a_store_that_cannot_be_benchmarked_is_one_readable_line(tmp_path: Path) -> None:
    done = bench("--store", "cassandra", "--out-dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "relevanz: error: --store: only embedded can be chosen here; --stack "
        "kafka-cassandra runs the pipeline on a Cassandra started for the run, "
        "got 'cassandra'")


def test_a_sweep_on_the_real_stack_is_refused_in_one_line(tmp_path: Path) -> None:
    done = bench("--sweep", "--stack", "kafka-cassandra", "--out-dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "relevanz: error: --sweep runs on the embedded stack only; leave out --stack")


@pytest.mark.cassandra
@SLOW
def test_bench_on_kafka_and_cassandra_reports_the_same_figures_and_the_jvms(
        tmp_path: Path) -> None:
    done = bench("--stack", "kafka-cassandra", "--events", "3000", "--customers", "300",
                 "--catalogue", "20", "--latency-seconds", "2", "--json",
                 "--out-dir", str(tmp_path), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert (result["broker"], result["store"]) == ("kafka", "cassandra")
    for key in ("raw_events_per_s", "faust_events_per_s", "pipeline_events_per_s",
                "p99_ms", "faust_p99_ms", "decide_p99_ms", "kafka_start_s",
                "cassandra_start_s", "kafka_rss_mb", "cassandra_peak_rss_mb"):
        assert result[key] > 0, key
    assert result["pipeline_vs_faust"] == pytest.approx(
        result["pipeline_events_per_s"] / result["faust_events_per_s"], abs=0.001)
    assert result["decide_errors"] == 0
    # The audience was preloaded into Cassandra (less the customers the stream erased).
    assert 270 <= result["store_customers"] <= 300
    assert "Apache Kafka on 127.0.0.1:" in done.stderr
    assert (tmp_path / "cassandra" / "data" / "commitlog").is_dir()
