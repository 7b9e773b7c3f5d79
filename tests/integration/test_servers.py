"""The real-server launchers fail the way a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ServerUnavailable
from streams.servers.jvm import require_prerequisites
from streams.servers.kafka import KafkaServer


def test_without_java_or_maven_one_line_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: neither java nor mvn
    with pytest.raises(ServerUnavailable) as raised:
        require_prerequisites()
    message = str(raised.value)
    assert message == ("java and mvn not found on PATH: install a JDK 17 and Maven 3 "
                       "(Debian/Ubuntu: apt-get install openjdk-17-jdk-headless maven)")
    assert "\n" not in message


def test_a_server_not_ready_in_time_fails_with_the_tail_of_its_log(tmp_path: Path) -> None:
    server = KafkaServer(tmp_path / "kafka", ready_timeout_s=1.0)
    with pytest.raises(ServerUnavailable, match=r"kafka did not become ready within 1s; "
                                                r"the end of .*kafka\.log:\n") as raised:
        server.start()
    assert "Formatting metadata directory" in str(raised.value)  # a line of the server's log
    assert not server.running
