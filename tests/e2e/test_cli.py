"""The ``relevanz`` command as a user runs it: a real process, the embedded broker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from schemas.codec import decode
from streams.broker import EmbeddedBroker, free_port
from streams.sim.demo import DemoOptions, demo_traffic
from tests.harness import consume_exactly, group_env, isolated_settings

RELEVANZ = str(Path(sys.executable).parent / "relevanz")


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 180,
        **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELEVANZ, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False, **kwargs)


def test_demo_accounts_for_every_event_and_logs_no_raw_customer_id(tmp_path: Path) -> None:
    # Debug logging: the most our own code ever writes about customers.
    done = run(["demo", "--events", "20000", "--json", "--data-dir", str(tmp_path)],
               env={"RELEVANZ_LOG_LEVEL": "debug"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The events, and the site's page views besides (--visitors).
    assert result["events_in"] == 20000 + result["page_views_published"]
    assert result["page_views_published"] > 0
    assert result["next_page_hit3"] >= 1.5 * result["next_page_hit3_popular"]
    assert result["session_conversion_auc"] >= 0.75
    assert result["events_in"] == (
        result["applied"] + result["duplicates"] + result["dead_letters"])
    assert result["dead_letters"] == result["injected_malformed"] > 0
    assert result["duplicates"] == result["injected_duplicates"] > 0
    # The audience consents (or not) as people do: some behaviour is skipped,
    # some customers are erased, follow-ups go out to those who allow them.
    assert result["skipped_without_consent"] > 0
    assert result["erasures"] > 0
    assert result["decisions"] >= result["send_triggers"] > 0
    # Campaigns: caps and holdouts hold some sends back; on the simulated audience
    # (reactions to sends) every campaign reports its uplift with an interval.
    assert result["capped"] == result["refused"].get("capped", 0)
    assert result["proposals"] == 0  # the built-in book has no campaign in approval mode
    assert result["refused"].get("holdout", 0) > 0
    follow_up = result["campaigns"]["interest-follow-up"]
    assert follow_up["treated"]["sends"] > 0
    assert follow_up["holdout"]["sends"] > 0
    clicks = follow_up["uplift"]["clicks"]
    assert clicks["low"] <= clicks["difference"] <= clicks["high"]
    assert result["campaign_simulation"]["send_triggers"] > 0
    for key in ("elapsed_s", "events_per_s", "cancellations", "forgotten"):
        assert key in result
    assert (tmp_path / "broker.log").exists()

    # Every customer of the run's audience, the erased ones included.
    generator = demo_traffic(DemoOptions(events=20000), 20000)
    audience = {m.key.decode() for m in generator.messages(20000)
                if m.topic != "content" and m.key}
    assert generator.truth.erased
    logged = done.stderr + done.stdout
    assert "customer_erased" in logged  # lines that are about a customer were written
    leaked = sorted(cid for cid in audience if cid in logged)
    assert leaked == [], f"raw customer ids in the logs: {leaked[:5]}"

    store = f"embedded:{tmp_path / 'store.db'}"
    db = sqlite3.connect(tmp_path / "store.db")
    try:
        customers = [cid for (cid,) in db.execute("SELECT customer_id FROM customers")]
    finally:
        db.close()
    assert not set(customers) & generator.truth.erased

    exported = run(["customer", "export", customers[0]], env={"RELEVANZ_STORE_URL": store})
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["customer_id"] == customers[0]
    nobody = run(["customer", "export", "never-seen"], env={"RELEVANZ_STORE_URL": store})
    assert nobody.returncode == 3
    assert nobody.stderr.strip() == "relevanz: nothing is held about this customer"


@pytest.mark.cassandra
def test_the_demo_balances_on_real_kafka_and_cassandra(tmp_path: Path) -> None:
    done = run(["demo", "--stack", "kafka-cassandra", "--events", "3000", "--json",
                "--data-dir", str(tmp_path)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Apache Kafka on 127.0.0.1:" in done.stderr
    assert "Apache Cassandra on 127.0.0.1:" in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["balanced"] is True
    assert result["events_in"] == 3000 + result["page_views_published"] == (
        result["applied"] + result["duplicates"] + result["dead_letters"])
    assert result["dead_letters"] == result["injected_malformed"] > 0
    assert result["duplicates"] == result["injected_duplicates"] > 0
    assert result["decisions"] > 0
    # The servers' data stayed in the data directory; nothing is left running.
    assert (tmp_path / "kafka" / "data" / "meta.properties").exists()
    assert (tmp_path / "cassandra" / "data" / "commitlog").is_dir()


def test_ctrl_c_stops_the_demo_cleanly_with_its_summary(tmp_path: Path) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group: the demo's
    # embedded broker must outlive the worker's clean shutdown, not die with it.
    demo = subprocess.Popen([RELEVANZ, "demo", "--data-dir", str(tmp_path), "--rate", "500"],
                            env={**os.environ, "RELEVANZ_WEB_PORT": str(free_port())},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        assert demo.stderr is not None
        while "published" not in (line := demo.stderr.readline()):
            assert line, "the demo ended before publishing"
            assert time.monotonic() < deadline, "no progress within 60 s"
        os.killpg(demo.pid, signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 0, err
    assert "events consumed:" in out
    assert "error" not in err.lower(), err[-2000:]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["worker"], {"RELEVANZ_PARTITIONS": "many"},
         "relevanz: error: RELEVANZ_PARTITIONS: expected a whole number from 1 to 1024, "
         "got 'many'"),
        (["worker"], {"RELEVANZ_BROKER_URL": "localhost"},
         "relevanz: error: RELEVANZ_BROKER_URL: expected kafka://host:port[,host:port], "
         "got 'localhost'"),
        (["demo"], {"RELEVANZ_LOG_FORMAT": "xml"},
         "relevanz: error: RELEVANZ_LOG_FORMAT: expected one of json, console, got 'xml'"),
    ],
)
def test_a_bad_setting_stops_with_one_readable_line(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    done = run(args, env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == expected
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["demo", "--malformed-share", "2"],
     "relevanz demo: error: Invalid value for '--malformed-share': must be between 0 and 1, "
     "got 2 (see 'relevanz demo --help')"),
    (["demo", "--no-such-option"],
     "relevanz demo: error: No such option: --no-such-option (see 'relevanz demo --help')"),
    (["no-such-command"],
     "relevanz: error: No such command 'no-such-command'. (see 'relevanz --help')"),
])
def test_a_bad_argument_is_one_readable_line(args: list[str], expected: str) -> None:
    done = run(args, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == expected


def test_help_lists_every_command() -> None:
    done = run(["--help"], timeout=60)
    assert done.returncode == 0
    for command in ("worker", "demo", "produce"):
        assert command in done.stdout


def test_produce_reports_bad_lines_and_sends_the_rest(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)
    event = {"event_id": "e1", "customer_id": "c1", "schema_version": 1,
             "occurred_at": "2026-01-01T10:00:00+01:00", "content_id": "n1"}
    lines = [
        json.dumps({"topic": "clicks", "event": event}),
        "{not json",
        json.dumps({"topic": "clicks", "event": {**event, "event_id": "e2"}}),
        json.dumps({"topic": "weather", "event": event}),
        json.dumps({"topic": "clicks", "event": {"customer_id": "c9"}}),  # invalid, still sent
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    env = {"RELEVANZ_BROKER_URL": f"kafka://{broker.bootstrap_servers}",
           "RELEVANZ_TOPIC_PREFIX": settings.topic_prefix}
    done = run(["produce", str(source)], env, timeout=60)
    assert done.returncode == 1
    assert "line 2: not valid JSON" in done.stderr
    assert "line 4: unknown topic 'weather'" in done.stderr
    assert "produce: 3 sent, 3 delivered, 0 failed, 2 bad lines" in done.stderr
    sent = consume_exactly(settings, "clicks", 3)
    # Different keys land on different partitions, so only per-key order is defined.
    assert sorted(str(decode(m.value()).get("event_id")) for m in sent) == ["None", "e1", "e2"]
    assert {m.key() for m in sent} == {b"c1", b"c9"}


def test_produce_reports_non_utf8_and_lone_surrogate_lines_and_sends_the_rest(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)
    event = {"event_id": "e1", "customer_id": "c1", "schema_version": 1,
             "occurred_at": "2026-01-01T10:00:00+01:00", "content_id": "n1"}
    lines = [
        json.dumps({"topic": "clicks", "event": event}).encode(),
        b'{"topic": "clicks", "event": {"customer_id": "caf\xe9"}}',  # Latin-1, not UTF-8
        b'{"topic": "clicks", "event": {"customer_id": "\\ud800"}}',  # a lone surrogate
        b"[" * 5000,
        json.dumps({"topic": "clicks", "event": {**event, "event_id": "e2"}}).encode(),
    ]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    env = {"RELEVANZ_BROKER_URL": f"kafka://{broker.bootstrap_servers}",
           "RELEVANZ_TOPIC_PREFIX": settings.topic_prefix}
    done = run(["produce", str(source)], env, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "line 2: not UTF-8 text (byte 0xe9 at position 49)" in done.stderr
    assert "line 3: holds text that is not valid Unicode (a lone surrogate)" in done.stderr
    assert "line 4: not valid JSON: nested too deeply" in done.stderr
    assert "produce: 2 sent, 2 delivered, 0 failed, 3 bad lines" in done.stderr
    consume_exactly(settings, "clicks", 2)


def test_customer_export_refuses_a_store_that_does_not_exist_and_creates_nothing(
    tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "store.db"
    done = run(["customer", "export", "c1"], env={"RELEVANZ_STORE_URL": f"embedded:{missing}"},
               timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"relevanz: error: RELEVANZ_STORE_URL: the embedded store {missing} does not exist; "
        "name the store the workers write to"]
    assert not missing.parent.exists()


def test_produce_reads_standard_input(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path)
    env = {"RELEVANZ_BROKER_URL": f"kafka://{broker.bootstrap_servers}",
           "RELEVANZ_TOPIC_PREFIX": settings.topic_prefix}
    bare = {"event_id": "p1", "customer_id": "c1", "schema_version": 1}
    done = run(["produce", "--topic", "profiles", "-"], env, timeout=60,
               input=json.dumps(bare) + "\n")
    assert done.returncode == 0, done.stderr
    assert "1 delivered" in done.stderr
    consume_exactly(settings, "profiles", 1)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_worker_serves_probes_and_exits_cleanly_on_sigterm(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ,
           "RELEVANZ_BROKER_URL": f"kafka://{broker.bootstrap_servers}",
           "RELEVANZ_TOPIC_PREFIX": f"w{uuid.uuid4().hex[:8]}.",
           "RELEVANZ_CONSUMER_GROUP": f"w-{uuid.uuid4().hex[:8]}",
           "RELEVANZ_STORE_URL": f"embedded:{tmp_path / 'store.db'}",
           "RELEVANZ_WEB_PORT": str(port),
           **group_env(broker.bootstrap_servers),
           "RELEVANZ_IDEMPOTENT_PRODUCERS": "false"}
    worker = subprocess.Popen([RELEVANZ, "worker"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and worker.poll() is None:
            try:
                assert _get(f"http://127.0.0.1:{port}/health") == 200
                if _get(f"http://127.0.0.1:{port}/ready") == 200:
                    ready = True
                    break
            except urllib.error.URLError:
                pass  # not listening yet
            time.sleep(0.2)
        assert ready, f"worker never became ready; stderr: {worker.stderr}"
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr
        lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        assert any(line["event"] == "worker_stopped" for line in lines)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_an_unreachable_broker_is_one_readable_line(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(json.dumps({"topic": "clicks", "event": {"customer_id": "c1"}}) + "\n")
    port = free_port()  # nothing listens there
    done = run(["produce", "-q", str(source)], {"RELEVANZ_BROKER_URL": f"kafka://127.0.0.1:{port}"},
               timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"relevanz: error: broker 127.0.0.1:{port} not reachable within 10s "
        "(Failed to get metadata: Local: Broker transport failure); check RELEVANZ_BROKER_URL"]
