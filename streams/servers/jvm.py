"""A Java server process from a Maven classpath: start, readiness deadline, clean stop.

:func:`require_prerequisites` says in one line what to install when Java 17
or Maven is missing.  :func:`classpath` resolves a pom's runtime classpath
with ``mvn dependency:build-classpath`` (downloads go to ``~/.m2``; the
resolved path list is cached next to them, keyed by the pom's digest).
:class:`JvmServer` runs ``java`` on it; subclasses say how to configure the
server and how to ask it whether it is ready.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from streams.errors import ServerUnavailable
from streams.processes import stop_process

log = structlog.get_logger(__name__)

#: Lowest Java feature release the servers run on (Cassandra 5.0: 11 or 17; we pin 17).
JAVA_RELEASE = 17
INSTALL_HINT = ("install a JDK 17 and Maven 3 (Debian/Ubuntu: "
                "apt-get install openjdk-17-jdk-headless maven)")
#: Lines of the server's log quoted when it fails to start.
LOG_TAIL_LINES = 40
MVN_TIMEOUT_S = 900.0


def java_release(java: str) -> int | None:
    """The feature release of the ``java`` binary (17 for "17.0.15"), None if unknown."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True,  # noqa: S603 - our own arguments
                             timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def require_prerequisites() -> tuple[str, str]:
    """Paths of ``java`` (17 or later) and ``mvn``, or one line saying what to install."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        missing = " and ".join(n for n, p in (("java", java), ("mvn", mvn)) if p is None)
        raise ServerUnavailable(f"{missing} not found on PATH: {INSTALL_HINT}")
    release = java_release(java)
    if release is None or release < JAVA_RELEASE:
        raise ServerUnavailable(
            f"{java} is Java {release or 'of unknown version'}, the servers need "
            f"{JAVA_RELEASE} or later: {INSTALL_HINT}")
    return java, mvn


def pom(name: str) -> Path:
    """The pom of server ``name`` ("kafka", "cassandra") shipped with this package."""
    return Path(str(resources.files("streams.servers").joinpath(f"{name}.pom.xml")))


def _cache_dir() -> Path:
    return Path.home() / ".m2" / "relevanz-classpaths"


def classpath(pom_path: Path, mvn: str) -> list[str]:
    """The runtime classpath of ``pom_path``: jars in ``~/.m2``, resolved once per pom."""
    digest = hashlib.sha256(pom_path.read_bytes()).hexdigest()[:16]
    cached = _cache_dir() / f"{pom_path.stem}-{digest}.txt"
    if cached.exists():
        jars = cached.read_text(encoding="utf-8").split(os.pathsep)
        if all(Path(j).exists() for j in jars):
            return jars
    cached.parent.mkdir(parents=True, exist_ok=True)
    out = cached.with_suffix(".tmp")
    started = time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603 - our own arguments
            [mvn, "--batch-mode", "--quiet", "-f", str(pom_path),
             "dependency:build-classpath", "-Dmdep.includeScope=runtime",
             f"-Dmdep.outputFile={out}"],
            capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerUnavailable(f"mvn could not resolve {pom_path.name}: {exc}") from exc
    if done.returncode != 0 or not out.exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-LOG_TAIL_LINES:])
        raise ServerUnavailable(
            f"mvn could not resolve {pom_path.name} (exit {done.returncode}); is Maven "
            f"Central reachable?\n{tail}")
    out.replace(cached)
    log.info("server_classpath_resolved", pom=pom_path.name,
             seconds=round(time.monotonic() - started, 1))
    return cached.read_text(encoding="utf-8").split(os.pathsep)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` ("" if it does not exist)."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(encoding="utf-8", errors="replace")
                         .splitlines()[-lines:])
    return ""


class JvmServer:
    """One Java server process with its data and log in ``work_dir``.

    Subclasses set :attr:`name` and :attr:`pom_name` and implement
    :meth:`prepare` (write configuration, return the ``java`` arguments after
    the classpath) and :meth:`ready` (one readiness probe).
    """

    name = "server"
    pom_name = ""

    def __init__(self, work_dir: Path, ready_timeout_s: float = 120.0,
                 heap_mb: int = 512) -> None:
        self.work_dir = work_dir
        self.ready_timeout_s = ready_timeout_s
        self.heap_mb = heap_mb
        self.log_path = work_dir / f"{self.name}.log"
        self.started_in_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- to implement -------------------------------------------------------------

    def prepare(self, java: str, jars: Sequence[str]) -> list[str]:
        """Write the configuration; the JVM options (``-cp`` from ``jars`` included) and
        the main class with its arguments."""
        raise NotImplementedError

    def ready(self) -> bool:
        """One readiness probe: True once the server answers its clients."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------

    def java_options(self) -> list[str]:
        """Heap and GC for a small machine shared with the tests."""
        return [f"-Xms{self.heap_mb // 2}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC",
                "-XX:+UseStringDeduplication", "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                "-Djava.net.preferIPv4Stack=true",
                # Few cores: no more JIT and GC threads than the machine has.
                "-XX:CICompilerCount=2", "-XX:ParallelGCThreads=2", "-XX:ConcGCThreads=1"]

    def start(self) -> Self:
        """Resolve, configure and start the server; return once it is ready."""
        java, mvn = require_prerequisites()
        began = time.monotonic()
        jars = classpath(pom(self.pom_name), mvn)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        arguments = self.prepare(java, jars)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JAVA_TOOL", "_JAVA"))}
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(  # noqa: S603 - the java binary, our own arguments
                [java, *arguments], stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.work_dir, env=env,
                start_new_session=True, preexec_fn=_die_with_parent)
        self._wait_ready(began)
        self.started_in_s = round(time.monotonic() - began, 1)
        log.info("server_started", server=self.name, seconds=self.started_in_s,
                 work_dir=str(self.work_dir))
        return self

    def _wait_ready(self, began: float) -> None:
        deadline = began + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise ServerUnavailable(
                    f"{self.name} exited with code {code} while starting; the end of "
                    f"{self.log_path}:\n{log_tail(self.log_path)}")
            if self.ready():
                return
            time.sleep(0.5)
        self.stop()
        raise ServerUnavailable(
            f"{self.name} did not become ready within {self.ready_timeout_s:g}s; the end "
            f"of {self.log_path}:\n{log_tail(self.log_path)}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the servers shut down cleanly on it), SIGKILL after ``timeout_s``."""
        process, self._process = self._process, None
        if stop_process(process, timeout_s):
            log.info("server_stopped", server=self.name)

    def memory_mb(self) -> tuple[float, float] | None:
        """The process's resident memory now and at its peak, in MB (Linux's
        ``VmRSS`` and ``VmHWM``); None when not running or not on Linux."""
        if self._process is None:
            return None
        fields: dict[str, float] = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self._process.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024  # kB
        if len(fields) < 2:
            return None
        return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when the process that started it dies."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
