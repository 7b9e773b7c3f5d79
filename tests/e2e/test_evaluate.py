"""``relevanz evaluate`` as a user runs it: a real process on a log the test writes."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.e2e.test_cli import run

START = datetime(2021, 1, 4, tzinfo=UTC)
CUTOFF = START + timedelta(weeks=36)


def write_log(path: Path, customers: int = 120) -> set[str]:
    """Half the customers buy every fortnight throughout; the other half buy just as
    often and as much, but stop for good at a random-looking point before the cutoff.
    Returns the ids of those who buy in the holdout."""
    lines = ["customer_id,occurred_at,amount,quantity"]
    buyers = set()
    for n in range(customers):
        cid = str(1000 + n)
        loyal = n % 2 == 0
        first = START + timedelta(days=n % 14)
        last = CUTOFF + timedelta(weeks=12) if loyal else first + timedelta(
            weeks=6 + (n * 7) % 20)
        at = first
        while at < last:
            lines.append(f"{cid},{at.isoformat()},{20 + n % 5}.50,{1 + n % 3}")
            if at >= CUTOFF:
                buyers.add(cid)
            at += timedelta(days=14)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return buyers


def test_evaluate_scores_the_engine_next_to_the_baselines(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    buyers = write_log(log)
    done = run(["evaluate", str(log), "--cutoff", CUTOFF.isoformat(), "--holdout-weeks", "12",
                "--json"])
    assert done.returncode == 0, done.stderr
    assert "replayed" in done.stderr or "customers" in done.stderr  # progress on stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["customers"] == 120
    assert result["buyers"] == len(buyers) == 60
    # Loyal customers buy fortnightly: all of them within a 30-day horizon.
    assert result["purchase_actual"] == 60
    # Recency separates the two groups perfectly.
    assert result["recency_auc"] == 1.0
    for key in ("purchase_auc", "churn_auc", "rfm_auc", "bgnbd_auc", "purchase_expected"):
        assert isinstance(result[key], float), key
    low, high = result["purchase_auc_ci"]
    assert low <= result["purchase_auc"] <= high
    # Served as of the cutoff, the predictions see who went quiet; a value stored at each
    # customer's last purchase would not.
    assert result["purchase_auc"] >= 0.95
    assert result["churn_auc"] >= 0.95
    assert abs(result["purchase_expected"] - 60) <= 0.25 * 60
    # Without --json the learnt weights are printed too, strongest first.
    text = run(["evaluate", str(log), "--cutoff", CUTOFF.isoformat(), "--holdout-weeks", "12",
                "-q"]).stdout
    line = next(x for x in text.splitlines() if x.startswith("purchase weights: "))
    first = min(result["purchase_weights"].items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    assert line.startswith(f"purchase weights: {first[0]} {first[1]:+.3f}")


def test_evaluate_names_the_bad_line_in_one_line(tmp_path: Path) -> None:
    log = tmp_path / "bad.csv"
    log.write_text("customer_id,occurred_at,amount,quantity\n7,1997-01-01,5.0,1\n",
                   encoding="utf-8")
    done = run(["evaluate", str(log), "--cutoff", "1997-10-01T00:00:00+00:00",
                "--holdout-weeks", "39"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"relevanz: error: {log} line 2: occurred_at '1997-01-01' has no UTC offset"]


CDNOW_CUTOFF = "1997-10-01T00:00:00+00:00"


def _figures(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: v for k, v in result.items() if k not in ("elapsed_s", "through_worker")}


def test_through_the_worker_gives_the_in_process_figures(tmp_path: Path) -> None:
    """Published to the embedded broker, applied by a worker, read back through
    GET /v1/customers/{id}?as_of=...: every figure and learnt weight as in process.
    (1,000 customers: enough that publishing in one go, not one event time at a
    time, changes the figures.)"""
    log = tmp_path / "cdnow.csv"
    assert run(["cdnow-csv", str(log)]).returncode == 0
    args = ["evaluate", str(log), "--cutoff", CDNOW_CUTOFF, "--holdout-weeks", "39",
            "--json", "--customers", "1000"]
    in_process = run(args)
    through = run([*args, "--through-worker"], timeout=600)
    assert "through the worker" in through.stderr  # progress while it runs
    assert "read back" in through.stderr or "customers" in through.stderr
    figures = _figures(in_process)
    assert figures["customers"] == 1000
    assert figures["purchase_expected"]
    assert figures["purchase_weights"]
    assert _figures(through) == figures


def test_a_random_interleaving_of_the_topics_is_seeded(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    write_log(log, customers=40)
    args = ["evaluate", str(log), "--cutoff", CUTOFF.isoformat(), "--holdout-weeks", "12",
            "--json", "-q", "--order", "random"]
    first, again = _figures(run([*args, "--seed", "3"])), _figures(run([*args, "--seed", "3"]))
    assert first["order"] == "random"
    assert first == again
    refused = run([*args, "--through-worker"])
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("relevanz: error: --through-worker publishes in "
                                      "event-time order: use --order time")
