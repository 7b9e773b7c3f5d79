"""``relevanz store migrate`` as a user runs it: a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.broker import free_port

RELEVANZ = str(Path(sys.executable).parent / "relevanz")


def migrate(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELEVANZ, "store", "migrate", *args], capture_output=True, text=True,
                          timeout=60, check=False,
                          env={**os.environ, "RELEVANZ_STORE_URL": store_url})


def test_migrate_prepares_an_embedded_store_and_can_run_again(tmp_path: Path) -> None:
    url = f"embedded:{tmp_path / 'store.db'}"
    for _ in range(2):
        done = migrate(url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"store {url}: schema is up to date"
    assert (tmp_path / "store.db").is_file()


def test_an_unreachable_cassandra_is_one_readable_line() -> None:
    port = free_port()
    done = migrate(f"cassandra://127.0.0.1:{port}/relevanz")
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"relevanz: error: cassandra 127.0.0.1:{port}/relevanz: migrate failed: no host answered")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_dropping_old_tables_of_an_embedded_store_is_refused_in_one_line(tmp_path: Path) -> None:
    done = migrate(f"embedded:{tmp_path / 'store.db'}", "--drop-old-tables")
    assert done.returncode == 2
    assert "--drop-old-tables: only a Cassandra store has old tables to drop" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "store.db").exists()
