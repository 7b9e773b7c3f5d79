"""Child processes the platform starts (the embedded broker, Kafka, Cassandra):
how each is seen to be ready and how it is stopped."""

from __future__ import annotations

import contextlib
import socket
import subprocess

from confluent_kafka.admin import AdminClient


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float) -> bool:
    """SIGTERM ``process``, SIGKILL it after ``timeout_s``; False when it was not running."""
    if process is None or process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)
    return True


def accepts_connections(port: int) -> bool:
    """Whether something listens on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def serves_kafka_metadata(port: int, bootstrap_servers: str) -> bool:
    """Whether the Kafka-protocol broker on ``port`` answers a metadata request."""
    if not accepts_connections(port):
        return False
    # A fresh client per probe: a lingering one would keep reconnecting after stop().
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    with contextlib.suppress(Exception):  # not ready yet: any client error means retry
        return bool(admin.list_topics(timeout=2.0).brokers)
    return False
