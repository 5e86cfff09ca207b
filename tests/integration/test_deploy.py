"""The production packaging (docker-compose.yml, deploy/) checked against the
code: schemas, the config keys the env vars set, probe ports and paths, the
metric names in the alert rules and the dashboard, promtool's own checks,
and a real Prometheus scraping a real worker with the rules loaded."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamer.adapters.metrics import WorkerMetrics
from streamer.api import ApiMetrics
from streamer.api import build as build_api
from streamer.local.broker import LocalBroker, free_port
from streamer.settings import load_settings
from tests.cli_support import hotspots as hotspots_in_tree
from tests.pipeline_support import settings_for
from tests.worker_support import Workers, write_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hotspots.json"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
K8S_VERSION = "1.30"
WORKER_JOB = "hotspots-worker"
API_JOB = "hotspots-api"
# what `${VAR:?...}` in docker-compose.yml stands for here (the user's shell there)
COMPOSE_VARS = {
    "HOTSPOTS_API_TOKENS": '{wall = {token_sha256 = "' + "ab" * 32 + '", role = "display"}}',
    "GRAFANA_ADMIN_PASSWORD": "not-a-password",
}
DEADLINE_S = 60.0


# --- helpers ------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open() as handle:
        return yaml.safe_load(handle)


def load_yaml_all(path: Path) -> list[Any]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def check_config(env: dict[str, str]) -> dict[str, Any]:
    """`hotspots check-config` with exactly these HOTSPOTS_* variables: the
    effective configuration, or the test fails with the command's message."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTS_")}
    done = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "check-config"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.fail(f"check-config refused {sorted(env)}:\n{done.stderr}", pytrace=False)
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def config_value(config: dict[str, Any], env_name: str) -> Any:
    """The value at the key a HOTSPOTS_<SECTION>__<KEY> variable sets."""
    node: Any = config
    for part in env_name.removeprefix("HOTSPOTS_").lower().split("__"):
        assert isinstance(node, dict) and part in node, f"{env_name} sets no config key"
        node = node[part]
    return node


def secret_env_names(config: dict[str, Any]) -> set[str]:
    """Env var names the configuration reads secrets from (the *_env keys)."""
    names = {config["kafka"]["sasl_password_env"], config["store"]["redis_password_env"]}
    names |= {hook["secret_env"] for hook in config["alerts"]["webhooks"].values()}
    return {n for n in names if n}


# what each command connects to at start: `run` both and the webhooks,
# `create-topics` Kafka only, `serve` Redis only
CONNECTS = {"worker": {"kafka", "redis", "webhooks"}, "init": {"kafka"}, "api": {"redis"}}


def needed_secret_envs(config: dict[str, Any], component: str) -> set[str]:
    """The secret env vars a component reads at start (the *_env keys of what
    it connects to)."""
    names: set[str] = set()
    if "redis" in CONNECTS[component]:
        names.add(config["store"]["redis_password_env"])
    if "kafka" in CONNECTS[component] and config["kafka"]["security_protocol"].startswith("SASL"):
        names.add(config["kafka"]["sasl_password_env"])
    if "webhooks" in CONNECTS[component]:
        names |= {hook["secret_env"] for hook in config["alerts"]["webhooks"].values()}
    return {n for n in names if n}


def assert_env_is_config(env: dict[str, str], config: dict[str, Any], where: str) -> None:
    """Every HOTSPOTS_ variable names a config key (check-config already
    refused unknown ones); every other variable is a secret a *_env key names."""
    for name in env:
        if name.startswith("HOTSPOTS_"):
            config_value(config, name)
        else:
            assert name in secret_env_names(config), (
                f"{where}: env {name} is neither HOTSPOTS_<SECTION>__<KEY> nor named by a "
                f"*_env key ({sorted(secret_env_names(config))})"
            )


def exported_metric_names() -> set[str]:
    """Every series name the worker and the API can export."""
    names: set[str] = set()
    for registry in (WorkerMetrics().registry, ApiMetrics().registry):
        for family in registry.collect():
            if family.type == "counter":
                names |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                names |= {family.name + s for s in ("_bucket", "_count", "_sum", "_created")}
            else:
                names.add(family.name)
    return names


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    """hotspots_* names in a PromQL expression that nothing exports (string
    literals, such as label values, are not names)."""
    code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\bhotspots_[a-z0-9_]*[a-z0-9]\b", code)) - known


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run(
        [tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} (and $$)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in variables and (variables[name] or op != ":-"):
            return variables[name]
        if op in (":-", "-"):
            return arg or ""
        if op in (":?", "?"):
            pytest.fail(f"docker-compose.yml needs ${name}: {arg}")
        return ""

    text = re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", one, value)
    return text.replace("$$", "$")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE)
    return document


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: interpolate(str(v), COMPOSE_VARS) for k, v in raw.items()}


def our_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the hotspots image (built from deploy/Dockerfile)."""
    return {
        name: svc
        for name, svc in spec["services"].items()
        if isinstance(svc.get("build"), dict)
        and Path(svc["build"].get("dockerfile", "Dockerfile")) == Path("deploy/Dockerfile")
    }


def command_flag(command: list[str], flag: str) -> str | None:
    if flag in command:
        return command[command.index(flag) + 1]
    return None


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_yaml_all(path)
    ]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(found)}"
    return found[0]


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def pod_env(pod: dict[str, Any], container: dict[str, Any], files: Path) -> dict[str, str]:
    """The env a container gets, from the ConfigMap and the example Secrets,
    with paths into mounted Secret/ConfigMap volumes pointing at copies of
    those volumes' files under ``files`` (so check-config finds them)."""
    sources = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs()}

    def data_of(kind: str, name: str) -> dict[str, str]:
        doc = sources.get((kind, name))
        assert doc is not None, f"{container['name']} refers to {kind} {name}, not in deploy/k8s"
        return {**doc.get("data", {}), **doc.get("stringData", {})}

    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            env.update(data_of("ConfigMap", ref["configMapRef"]["name"]))
        if "secretRef" in ref:
            env.update(data_of("Secret", ref["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if key in source:
                data = data_of(kind, source[key]["name"])
                assert source[key]["key"] in data, f"{item['name']}: no key {source[key]}"
                env[item["name"]] = data[source[key]["key"]]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            data = data_of("Secret", volume["secret"]["secretName"])
        elif "configMap" in volume:
            data = data_of("ConfigMap", volume["configMap"]["name"])
        else:
            continue
        local = files / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for key, text in data.items():
            (local / key).write_text(text)
        prefix = mount["mountPath"].rstrip("/") + "/"
        env = {
            k: str(local) + "/" + v[len(prefix) :] if v.startswith(prefix) else v
            for k, v in env.items()
        }
    return env


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``rel`` (a path relative to the context)
    out of the build context (its patterns: Go filepath.Match plus ``**``,
    and a pattern excludes a directory's whole tree)."""
    ignored = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.removeprefix("!").strip("/")
        if pat.startswith("**/"):
            tail = pat[3:]
            hit = any(
                fnmatch.fnmatchcase("/".join(parts[i : j + 1]), tail)
                for i in range(len(parts))
                for j in range(i, len(parts))
            )
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pat) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


# --- docker-compose.yml --------------------------------------------------------


def test_compose_validates_against_the_compose_spec() -> None:
    schema_file = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(schema_file.read_text())
    # its $schema names draft 7 without the trailing '#' jsonschema looks up
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_compose_services_volumes_and_files_exist() -> None:
    spec = compose()
    services = spec["services"]
    named_volumes = set(spec.get("volumes") or {})
    assert {"kafka", "redis", "init", "worker", "api", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        for other in depends:
            assert other in services, f"{name} depends on {other}, which is not a service"
            condition = depends[other]["condition"] if isinstance(depends, dict) else None
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits on {other}'s health"
            if condition == "service_completed_successfully":
                assert services[other].get("restart", "no") == "no", f"{other} is one-shot"
        for volume in svc.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in named_volumes, f"{name} mounts undeclared volume {source}"
        build = svc.get("build")
        if isinstance(build, dict):
            context = ROOT / build.get("context", ".")
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    # the parts the deployment rests on
    assert services["worker"]["deploy"]["replicas"] == 3
    assert services["worker"]["depends_on"]["init"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["init"]["command"] == ["create-topics"]
    assert "--appendonly" in services["redis"]["command"]
    kafka_env = compose_env(services["kafka"])
    assert "broker" in kafka_env["KAFKA_PROCESS_ROLES"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]
    assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")


@pytest.fixture(scope="module")
def compose_configs() -> dict[str, dict[str, Any]]:
    """check-config of each service running our image, with its compose env."""
    return {name: check_config(compose_env(svc)) for name, svc in our_services(compose()).items()}


def test_compose_env_sets_real_config_keys(compose_configs: dict[str, dict[str, Any]]) -> None:
    services = compose()["services"]
    assert {"init", "worker", "api"} <= set(compose_configs)
    for name, config in compose_configs.items():
        env = compose_env(services[name])
        assert_env_is_config(env, config, f"docker-compose.yml service {name}")
        assert needed_secret_envs(config, name) <= set(env), f"{name} lacks a secret env"
        assert config["kafka"]["bootstrap"] == "kafka:9092"
        assert config["store"]["redis_url"].startswith("redis://redis:")
        assert config["worker"]["partitions"] == 12
    worker = compose_configs["worker"]["worker"]
    assert worker["web_host"] == "0.0.0.0", "Prometheus could not reach a worker on loopback"
    api = services["api"]
    assert command_flag(api["command"], "--host") == "0.0.0.0"
    port = command_flag(api["command"], "--port") or str(compose_configs["api"]["api"]["port"])
    assert any(str(p).endswith(f":{port}") for p in api["ports"]), "API port not published"
    assert compose_configs["api"]["api"]["tokens"], "serve refuses to start without tokens"
    # the healthchecks ask the ports the services serve
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    assert f":{worker['web_port']}/readyz" in worker_check
    assert f":{port}/readyz" in " ".join(api["healthcheck"]["test"])


def test_check_config_refuses_an_unknown_env_key() -> None:
    # the env checks above rest on this: a misspelt key fails
    done = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "check-config"],
        cwd=ROOT,
        env={**os.environ, "HOTSPOTS_WORKER__WEB_HOSTNAME": "0.0.0.0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "worker.web_hostname" in done.stderr


def test_compose_prometheus_scrapes_the_services_and_loads_the_rules(
    compose_configs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    config = load_yaml(PROMETHEUS_CONFIG)
    mounts = {
        v.split(":")[1]: (ROOT / v.split(":")[0]).resolve()
        for v in prometheus["volumes"]
        if v.startswith(".")
    }
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert mounts[config_flag.split("=", 1)[1]] == PROMETHEUS_CONFIG.resolve()
    assert config["rule_files"], "no rule files loaded"
    for rule_file in config["rule_files"]:
        assert mounts.get(rule_file) == RULES.resolve(), f"{rule_file} is not rules.yml"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ports = {
        "worker": compose_configs["worker"]["worker"]["web_port"],
        "api": int(command_flag(services["api"]["command"], "--port") or 0),
    }
    for job_name, service in ((WORKER_JOB, "worker"), (API_JOB, "api")):
        job = jobs[job_name]
        (sd,) = job["dns_sd_configs"]
        assert sd["type"] == "A"
        assert sd["names"] == [service]
        assert sd["port"] == ports[service], f"{job_name} scrapes the wrong port"
        assert job.get("metrics_path", "/metrics") == "/metrics"
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert set(sd["names"]) <= set(services), f"{job['job_name']} names no service"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host in {*services, "localhost"}, f"{target} is no compose service"
    # and promtool accepts it, with the rules at their real path
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump({**config, "rule_files": [str(RULES)]}))
    done = promtool("check", "config", str(local))
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_grafana_provisions_the_datasource_and_dashboard() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    mounts = {
        v.split(":")[1]: (ROOT / v.split(":")[0]).resolve()
        for v in grafana["volumes"]
        if v.startswith(".")
    }
    (datasource,) = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert datasource["uid"] == "prometheus"
    url = urllib.parse.urlsplit(datasource["url"])
    assert url.hostname in services
    assert url.port == 9090
    (provider,) = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "hotspots.yml")["providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent.resolve()
    assert (
        mounts["/etc/grafana/provisioning/datasources"]
        == (GRAFANA_PROVISIONING / "datasources").resolve()
    )
    assert (
        mounts["/etc/grafana/provisioning/dashboards"]
        == (GRAFANA_PROVISIONING / "dashboards").resolve()
    )


# --- Dockerfile -------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_dockerfile_is_multi_stage_non_root_and_installs_a_wheel() -> None:
    instructions = dockerfile_instructions()
    stages = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert len(stages) >= 2, "a builder and a runtime stage"
    builder, final = instructions[: stages[-1]], instructions[stages[-1] :]
    users = [args for word, args in final if word == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: use a numeric non-root UID"
    patterns = dockerignore_patterns()
    workdir = "/"
    copied: dict[str, str] = {}
    installs: list[str] = []
    for word, args in builder:
        if word == "WORKDIR":
            workdir = args if args.startswith("/") else f"{workdir.rstrip('/')}/{args}"
        if word == "RUN" and "streamer" in copied:
            installs += [c for c in args.split("&&") if re.search(r"\bpip\S*\s+install\b", c)]
        if word != "COPY" or "--from=" in args:
            continue
        *sources, dest = [a for a in shlex.split(args) if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert not dockerignored(source, patterns), f"COPY {source}: .dockerignore drops it"
            target = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
            if target.endswith("/") or len(sources) > 1:
                target = target.rstrip("/") + "/" + Path(source).name
            copied[source] = os.path.normpath(target)
    for needed in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "streamer"):
        assert needed in copied, f"the builder lacks {needed}"
    # the package, with its config and data inside, installed as a wheel from
    # the copied tree after the real source is in place: not editable
    home = str(Path(copied["streamer"]).parent)
    assert installs, "no pip install after COPY streamer"
    for install in installs:
        words = shlex.split(install)
        assert "-e" not in words and "--editable" not in words, f"editable install: {install}"
    assert any(home in shlex.split(i) for i in installs), f"nothing installs {home}"
    # the runtime stage takes only the venv, to the builder's path (its
    # scripts' shebangs hold it); the source tree stays in the builder
    carried = [
        [a for a in shlex.split(args) if not a.startswith("--")]
        for word, args in final
        if word == "COPY" and "--from=" in args
    ]
    assert carried, "the runtime stage copies nothing from the builder"
    for *sources, dest in carried:
        assert sources == [dest], f"COPY --from {sources} {dest}: keep the builder's paths"
        assert not Path(home).is_relative_to(dest) and not Path(dest).is_relative_to(home), (
            f"the runtime stage copies the source tree {home}"
        )
    assert all(word != "COPY" or "--from=" in args for word, args in final)
    # nothing the code reads at run time is kept out of the context
    for rel in (
        "streamer/config/default.toml",
        "streamer/config/categories.toml",
        "streamer/config/sources/philadelphia.toml",
        "streamer/data/philadelphia_2025.csv.gz",
        "streamer/data/philadelphia_police_districts.geojson",
        "streamer/web/index.html",
        "streamer/adapters/lua",
        "streamer/adapters/_resp.c",
        "streamer/core/_fastpath_c/fastpath.h",
    ):
        assert (ROOT / rel).exists()
        assert not dockerignored(rel, patterns), f".dockerignore drops {rel}"
    assert dockerignored(".venv/bin/python", patterns)
    entrypoint = dict(final).get("ENTRYPOINT", "")
    assert "hotspots" in entrypoint or "streamer.cli" in entrypoint


def test_the_wheel_runs_from_outside_the_source_tree(tmp_path: Path) -> None:
    """The files the Dockerfile's builder copies, built into a wheel and
    installed (not editable) into a fresh venv: ``hotspots`` run from a
    directory outside the repository finds its defaults, source profile,
    bundled sample and district outline, with both C extensions built."""
    context = tmp_path / "context"
    context.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", "build")
    for word, args in dockerfile_instructions():
        if word == "FROM" and context.joinpath("streamer").exists():
            break  # the builder stage only
        if word != "COPY" or "--from=" in args:
            continue
        for source in [a for a in shlex.split(args) if not a.startswith("--")][:-1]:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, context / source, ignore=skip)
            else:
                shutil.copy2(ROOT / source, context / source)
    wheels = tmp_path / "wheels"
    pip = (sys.executable, "-m", "pip")
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", wheels, context],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("hotspots-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for rel in (
        "config/default.toml",
        "config/categories.toml",
        "config/sources/philadelphia.toml",
        "data/philadelphia_2025.csv.gz",
        "data/philadelphia_police_districts.geojson",
        "web/index.html",
        "adapters/lua/apply.lua",
    ):
        assert f"streamer/{rel}" in names, f"the wheel lacks streamer/{rel}"
    for module in ("core/_fastpath", "adapters/_resp"):
        assert any(n.startswith(f"streamer/{module}.") and n.endswith(".so") for n in names), (
            f"the wheel lacks the compiled streamer/{module}"
        )
    # a venv of its own for the package; its dependencies are this
    # interpreter's, through a path entry (whose own .pth files, such as the
    # editable install's, are not run)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [*pip, "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HOTSPOTS_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, env=env, cwd=away, timeout=120
        )

    probe = run(
        python,
        "-c",
        "import streamer.adapters._resp, streamer.settings as s\n"
        "from streamer.core import fastpath\n"
        "assert fastpath.AVAILABLE\n"
        "print(s.CONFIG_DIR)\nprint(s.DATA_DIR)",
    )
    assert probe.returncode == 0, probe.stderr
    config_dir, data_dir = map(Path, probe.stdout.split())
    assert config_dir == site / "streamer" / "config"
    assert data_dir == site / "streamer" / "data"
    hotspots = venv / "bin" / "hotspots"
    assert run(hotspots, "--help").returncode == 0
    checked = run(hotspots, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["store"]["namespace"] == "hotspots"
    # a one-day backtest on the bundled sample, through the bundled profile,
    # category weights and the sample's force config (its district outline,
    # a path relative to the config): as from the source tree
    days = ("--profile", "philadelphia", "--from", "2025-12-01", "--to", "2025-12-01")
    evaluate = ("evaluate", data_dir / "philadelphia_2025.csv.gz", *days, "--json", "--quiet")
    force = ("--config", config_dir / "forces" / "philadelphia.toml")
    from_wheel = run(hotspots, *force, *evaluate)
    assert from_wheel.returncode == 0, from_wheel.stderr
    tree_force = ("--config", str(ROOT / "streamer" / "config" / "forces" / "philadelphia.toml"))
    from_tree = hotspots_in_tree(*tree_force, *map(str, evaluate), env=env)
    assert from_tree.returncode == 0, from_tree.stderr
    ours, theirs = json.loads(from_wheel.stdout), json.loads(from_tree.stdout)
    assert ours["study_cells"] > 0 and ours["events"] > 0
    for key in ("study_cells", "events", "methods"):
        assert ours[key] == theirs[key], key


def test_dockerignore_matching_follows_its_patterns() -> None:
    # the COPY checks above rest on this matcher
    assert dockerignored("tests/unit/x.py", ["tests"])
    assert dockerignored("streamer/__pycache__/a.pyc", ["**/__pycache__"])
    assert dockerignored("streamer/core/a.pyc", ["**/*.pyc"])
    assert not dockerignored("streamer/core/a.py", ["**/*.pyc", "tests"])
    assert not dockerignored("config/default.toml", ["config", "!config/default.toml"])


# --- Kubernetes ---------------------------------------------------------------------


def test_k8s_manifests_validate_against_the_api_schemas() -> None:
    docs = k8s_docs()
    assert {d["kind"] for _, d in docs} >= {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Service",
        "Secret",
    }
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc}")
        assert "namespace" not in doc["metadata"], f"{path.name}: keep it namespace-agnostic"
    listed = load_yaml(K8S / "kustomization.yaml")["resources"]
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == manifests - {"secret.example.yaml"}, "kustomization.yaml resources"


def test_k8s_objects_refer_to_each_other() -> None:
    worker = k8s_object("Deployment", "hotspots-worker")
    api = k8s_object("Deployment", "hotspots-api")
    hpa = k8s_object("HorizontalPodAutoscaler", "hotspots-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    for deployment in (worker, api):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
    for _, doc in k8s_docs():
        if doc["kind"] in ("PodDisruptionBudget", "Service"):
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matches = [
                d["metadata"]["name"]
                for d in (worker, api)
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert len(matches) == 1, f"{doc['kind']} {doc['metadata']['name']} selects {matches}"
    service = k8s_object("Service", "hotspots-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    for port in service["spec"]["ports"]:
        container_port(container, port["targetPort"])


@pytest.mark.parametrize("component", ["worker", "api"])
def test_k8s_pods_run_locked_down(component: str) -> None:
    deployment = k8s_object("Deployment", f"hotspots-{component}")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_user = [a for w, a in dockerfile_instructions() if w == "USER"][-1].split(":")[0]
    assert pod["securityContext"]["runAsUser"] == int(image_user), "the Dockerfile's USER"
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], "/tmp must be writable"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind])
    if component == "worker":
        # SIGTERM: the batch in hand is finished and committed first
        assert pod["terminationGracePeriodSeconds"] >= 30


@pytest.mark.parametrize("component", ["worker", "api"])
def test_k8s_env_sets_real_config_keys_and_probes_hit_served_ports(
    component: str, tmp_path: Path
) -> None:
    deployment = k8s_object("Deployment", f"hotspots-{component}")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = pod_env(pod, container, tmp_path)
    config = check_config(env)
    assert_env_is_config(env, config, f"deploy/k8s hotspots-{component}")
    missing = needed_secret_envs(config, component) - set(env)
    assert not missing, f"{component} reads secrets from unset env vars {sorted(missing)}"
    args = container.get("args", [])
    if component == "worker":
        assert args[:1] == ["run"]
        host, port = config["worker"]["web_host"], config["worker"]["web_port"]
        port = int(command_flag(args, "--web-port") or port)
    else:
        assert args[:1] == ["serve"]
        assert config["api"]["tokens"], "serve refuses to start without tokens"
        host = command_flag(args, "--host") or config["api"]["host"]
        port = int(command_flag(args, "--port") or config["api"]["port"])
    assert host == "0.0.0.0", "kubelet probes and Prometheus reach the pod IP, not loopback"
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("livenessProbe", "readinessProbe", "startupProbe")
        if kind in container
    }
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for kind, probe in probes.items():
        assert container_port(container, probe["port"]) == port, f"{kind} asks the wrong port"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    if component == "worker":
        hpa = k8s_object("HorizontalPodAutoscaler", "hotspots-worker")
        # a partition goes to one member of the group: more workers sit idle
        assert hpa["spec"]["maxReplicas"] <= config["worker"]["partitions"]
        assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]
        assert config["worker"]["state_dir"].startswith("/tmp/")
    else:
        routes = build_api(load_settings(environ={})).routes
        served = {getattr(r, "path", None) for r in routes}
        assert {"/healthz", "/readyz", "/metrics"} <= served


# --- Prometheus rules and the Grafana dashboard ------------------------------------


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULES_TEST.relative_to(ROOT)))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    alerts = {r["alert"] for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r}
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fired == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert {"summary", "description", "runbook"} <= set(rule["annotations"])


def test_rules_name_only_exported_metrics() -> None:
    known = exported_metric_names()
    exprs = [r["expr"] for g in load_yaml(RULES)["groups"] for r in g["rules"]]
    assert exprs
    for expr in exprs:
        assert not unknown_metrics(expr, known), f"{expr!r} names metrics nothing exports"


def test_the_metric_name_check_catches_a_misspelling() -> None:
    known = exported_metric_names()
    assert "hotspots_events_total" in known
    assert "hotspots_batch_seconds_bucket" in known
    assert "hotspots_api_request_seconds_bucket" in known
    assert unknown_metrics("rate(hotspots_event_total[5m])", known) == {"hotspots_event_total"}
    assert unknown_metrics("sum(hotspots_events)", known) == {"hotspots_events"}
    assert unknown_metrics('up{job="hotspots_none"}', known) == set()


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", [])]
    variables = dashboard.get("templating", {}).get("list", [])
    return exprs + [
        v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        for v in variables
        if v.get("type") == "query"
    ]


def as_promql(expr: str, variables: list[str]) -> str:
    """Grafana's variables replaced by what they expand to."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    for name in variables:
        expr = re.sub(rf"\$\{{?{name}\}}?", ".*", expr)
    return expr


def test_dashboard_is_valid_and_names_only_exported_metrics(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = list(dashboard_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    (datasource,) = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    for panel in panels:
        for item in [panel, *panel.get("targets", [])]:
            if "datasource" in item:
                assert item["datasource"]["uid"] == datasource["uid"], panel["title"]
    known = exported_metric_names()
    exprs = dashboard_exprs(dashboard)
    for expr in exprs:
        assert not unknown_metrics(expr, known), f"{expr!r} names metrics nothing exports"
    # what the dashboard must show
    text = " ".join(exprs)
    for metric in (
        "hotspots_events_total",
        "hotspots_consumer_lag",
        "hotspots_dead_letters_total",
        "hotspots_batch_seconds_bucket",
        "hotspots_store_seconds_bucket",
        "hotspots_last_publication_timestamp_seconds",
        "hotspots_alerts_open",
        "hotspots_alert_notices_total",
        "hotspots_alert_deliveries_total",
        "hotspots_api_request_seconds_bucket",
        "hotspots_push_clients",
        "hotspots_top_cell_score",
    ):
        assert metric in text, f"the dashboard shows no {metric}"
    # every query parses: promtool checks them as recording rules
    names = [v["name"] for v in dashboard.get("templating", {}).get("list", [])]
    queries = [t["expr"] for p in panels for t in p.get("targets", [])]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_promql(e, names)}
                    for i, e in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# --- a real Prometheus scraping a real worker --------------------------------------


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_for(what: str, check: Callable[[], Any], logs: list[Path]) -> Any:
    """Poll ``check`` until it returns something truthy, for at most DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out waiting for {what}\n{tails}", pytrace=False)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    status, body = http_get(
        f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    )
    if status != 200:
        return []
    result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    return result


def test_prometheus_scrapes_a_running_worker_and_loads_the_rules(
    broker: LocalBroker, redis_url: str, namespace: str, tmp_path: Path, workers: Workers
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (Debian: apt-get install prometheus)")
    settings = settings_for(namespace, broker.bootstrap, redis_url, worker={"partitions": 1})
    write_config(settings, workers.config)
    running = workers.start()
    prom_port, prom_log = free_port(), tmp_path / "prometheus.log"
    logs = [running.log, prom_log]
    # the compose scrape job, pointed at this worker instead of Docker's DNS
    compose_prometheus = load_yaml(PROMETHEUS_CONFIG)
    (job,) = [j for j in compose_prometheus["scrape_configs"] if j["job_name"] == WORKER_JOB]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{running.port}"]}]
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [job],
            }
        )
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with prom_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        binary,
                        f"--config.file={prom_config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                        "--log.level=warn",
                    ],
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        prometheus = f"http://127.0.0.1:{prom_port}"
        worker = f"http://127.0.0.1:{running.port}"

        def target_up() -> bool:
            status, body = http_get(f"{prometheus}/api/v1/targets")
            if status != 200:
                return False
            targets = json.loads(body)["data"]["activeTargets"]
            return any(t["labels"]["job"] == WORKER_JOB and t["health"] == "up" for t in targets)

        wait_for("Prometheus to scrape the worker", target_up, logs)
        (up,) = query(prometheus, f'up{{job="{WORKER_JOB}"}}')
        assert up["value"][1] == "1"
        assert wait_for(
            "hotspots_ready in Prometheus", lambda: query(prometheus, "hotspots_ready"), logs
        )

        # the Kubernetes probes ask paths the worker serves; the readiness
        # probe is what keeps hotspots_ready current
        pod = k8s_object("Deployment", "hotspots-worker")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[kind]["httpGet"]["path"]
            wait_for(
                f"{kind} {path} to answer 200", lambda p=path: http_get(worker + p)[0] == 200, logs
            )
        wait_for(
            "hotspots_ready == 1 in Prometheus",
            lambda: query(prometheus, "hotspots_ready == 1"),
            logs,
        )
        # the leader publishes: the staleness rule's expression is quiet
        wait_for(
            "a fresh publication timestamp",
            lambda: query(
                prometheus, "time() - max(hotspots_last_publication_timestamp_seconds) < 30"
            ),
            logs,
        )

        # every group and rule of rules.yml is loaded and evaluates without error
        wanted = {g["name"]: len(g["rules"]) for g in load_yaml(RULES)["groups"]}

        def rules_evaluated() -> list[dict[str, Any]] | None:
            status, body = http_get(f"{prometheus}/api/v1/rules")
            if status != 200:
                return None
            groups: list[dict[str, Any]] = json.loads(body)["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if not rules or any(r["health"] == "unknown" for r in rules):
                return None
            return groups

        groups = wait_for("the rules to be evaluated", rules_evaluated, logs)
        assert {g["name"]: len(g["rules"]) for g in groups} == wanted
        rules = [r for g in groups for r in g["rules"]]
        broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
        assert not broken, f"rules failing to evaluate: {broken}"

        # a worker reports and publishes: these two go quiet (the staleness
        # rule may be pending from before the first publication was scraped)
        def quiet() -> bool:
            states = {r["name"]: r["state"] for g in rules_evaluated() or [] for r in g["rules"]}
            return all(
                states.get(name) == "inactive"
                for name in ("HotspotsWorkerMetricsAbsent", "HotspotsRankingsNotPublished")
            )

        wait_for("the absence and staleness alerts to be inactive", quiet, logs)
    finally:
        for proc in reversed(procs):
            stop(proc)
