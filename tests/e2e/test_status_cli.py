"""``relevanz status`` against a real ``relevanz worker`` process on the embedded broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.topics import INPUT_TOPICS
from streams.broker import EmbeddedBroker, free_port
from streams.settings import Settings
from tests.harness import group_env

RELEVANZ = str(Path(sys.executable).parent / "relevanz")
OPERATOR = "status-operator-token-0123"
VIEWER = "status-viewer-token-012345"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELEVANZ, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, check=False)


@pytest.fixture(scope="module")
def worker_url(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[str]:
    port = free_port()
    env = {**os.environ,
           "RELEVANZ_BROKER_URL": f"kafka://{broker.bootstrap_servers}",
           "RELEVANZ_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:8]}.",
           "RELEVANZ_CONSUMER_GROUP": f"s-{uuid.uuid4().hex[:8]}",
           "RELEVANZ_STORE_URL": f"embedded:{tmp_path_factory.mktemp('store') / 'store.db'}",
           "RELEVANZ_WEB_PORT": str(port),
           "RELEVANZ_OPERATOR_TOKENS": OPERATOR, "RELEVANZ_VIEWER_TOKENS": VIEWER,
           **group_env(broker.bootstrap_servers),
           "RELEVANZ_IDEMPOTENT_PRODUCERS": "false"}
    worker = subprocess.Popen([RELEVANZ, "worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, "the worker never became ready"
            try:
                with urllib.request.urlopen(url + "/ready", timeout=2):  # noqa: S310 - loopback
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        yield url
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)


def test_status_prints_a_readable_table(worker_url: str) -> None:
    done = run(["status", "--url", worker_url], {"RELEVANZ_API_TOKEN": VIEWER})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Relevanz ")
    assert "READY" in lines[0]
    assert "Sending: on · paused campaigns: none" in done.stdout
    assert any(line.split()[:2] == ["clicks", "0"] for line in lines)
    assert "Lag total: 0" in done.stdout
    as_json = run(["status", "--url", worker_url, "--json"], {"RELEVANZ_API_TOKEN": OPERATOR})
    assert as_json.returncode == 0
    # Every partition of every input topic, the worker's own settings' count each.
    partitions = Settings.from_env({}).partitions
    assert len(json.loads(as_json.stdout)["partitions"]) == len(INPUT_TOPICS) * partitions


@pytest.mark.parametrize(
    ("env", "url", "code", "expected"),
    [
        ({"RELEVANZ_API_TOKEN": "wrong-token-0123456789"}, None, 1,
         "relevanz: error: operator API {url} refused the token (HTTP 401); set "
         "RELEVANZ_API_TOKEN to a viewer or operator token"),
        ({"RELEVANZ_API_TOKEN": ""}, None, 2,
         "relevanz: error: RELEVANZ_API_TOKEN: not set; give it a viewer or operator token of "
         "the worker (RELEVANZ_VIEWER_TOKENS / RELEVANZ_OPERATOR_TOKENS)"),
        ({"RELEVANZ_API_TOKEN": VIEWER}, "http://127.0.0.1:{free}", 1,
         "relevanz: error: operator API {url} not reachable (Connect call failed "
         "('127.0.0.1', {free})); check --url and that a worker is running"),
    ],
)
def test_status_errors_are_one_line(worker_url: str, env: dict[str, str], url: str | None,
                                    code: int, expected: str) -> None:
    free = free_port()
    target = url.format(free=free) if url else worker_url
    done = run(["status", "--url", target], env)
    assert done.returncode == code
    assert done.stderr.strip() == expected.format(url=target, free=free)
    assert "Traceback" not in done.stderr
