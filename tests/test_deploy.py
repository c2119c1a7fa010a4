"""The ways to run the exporter: the container image, the compose demo and the Helm chart.

No image can be built here (no Docker engine), so the Dockerfile is linted with hadolint and
read for the properties that matter, and the wheel it would build is built from the same
files, installed in a fresh virtualenv and run, health check included. The compose stack is
checked against the compose spec, and its Prometheus and Grafana files are checked in a
directory laid out as compose mounts them. The chart is rendered and linted by Helm's own
engine (helm-python-sdk binds Helm's Go SDK; no helm binary needed), and every rendered
manifest is validated against the Kubernetes schemas (kubernetes-validate); the Prometheus
Operator resources, which have no schema there, get structural checks and promtool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import requests
import yaml

from exporter import __version__
from exporter.config import load_config
from tests.processes import ROOT, free_port, require_module, require_tool, wait_until
from tests.repo_files import (
    ALERTMANAGER_CONFIG,
    CHART,
    COMPOSE_DIR,
    COMPOSE_FILE,
    DASHBOARD_DIR,
    KUBERNETES_VERSIONS,
    RULES_DIR,
    compose,
    manifests_of,
    one,
    render,
)

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXPORTER_PORT = 9636


def require_dir(path: Path, what: str) -> Path:
    """A directory of the repository's own (rules, dashboards): missing or empty fails."""
    assert path.is_dir() and any(path.iterdir()), (
        f"{path.relative_to(ROOT)} is missing or empty: no {what}"
    )
    return path


def run(args: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def runtime(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction of the final (runtime) stage."""
    return [rest for kw, rest in stages()[-1] if kw == keyword]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not exec (JSON) form: {arguments}"
    return [str(item) for item in value]


def healthcheck_command() -> list[str]:
    (healthcheck,) = runtime("HEALTHCHECK")
    _options, _, command = healthcheck.partition(" CMD ")
    return exec_form(command)


def build_context_sources() -> list[str]:
    """What the build stage copies from the build context (COPY without --from)."""
    sources: list[str] = []
    for keyword, rest in stages()[0]:
        if keyword == "COPY" and not rest.startswith("--from"):
            sources.extend(rest.split()[:-1])
    return sources


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require_tool("hadolint")
    result = run([hadolint, str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_builds_in_one_stage_and_runs_from_a_slim_base_of_the_same_python() -> None:
    froms = [rest for kw, rest in dockerfile_instructions() if kw == "FROM"]
    assert len(froms) == 2
    # The venv's interpreter is a link to the base image's python: both stages must agree.
    assert froms[0].split()[0] == froms[1].split()[0] == "${PYTHON_IMAGE}"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base.group(1)), base.group(1)
    copies = runtime("COPY")
    assert copies == ["--from=build /opt/neo-exporter /opt/neo-exporter"], copies


def test_image_runs_as_a_fixed_non_root_uid_and_keeps_state_in_a_volume() -> None:
    (user,) = runtime("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER must be a fixed numeric non-root uid: {user}"
    (workdir,) = runtime("WORKDIR")
    (volume,) = runtime("VOLUME")
    # state.path defaults to a file relative to the working directory: the volume.
    assert exec_form(volume) == [workdir]
    assert runtime("EXPOSE") == [str(EXPORTER_PORT)]


def test_image_entrypoint_is_the_console_script_in_exec_form() -> None:
    (entrypoint,) = runtime("ENTRYPOINT")
    command = exec_form(entrypoint)
    assert command[0] in PYPROJECT["project"]["scripts"]


def test_image_healthcheck_asks_healthy_with_python_not_curl() -> None:
    command = healthcheck_command()
    assert command[0] == "python"
    assert f"127.0.0.1:{EXPORTER_PORT}/-/healthy" in " ".join(command)
    assert not {"curl", "wget"} & set(" ".join(command).split())


def test_image_carries_oci_labels_matching_the_project() -> None:
    text = " ".join(runtime("LABEL"))
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', text))
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    version = re.search(r"^ARG VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert version is not None
    # pyproject.toml takes its version from the package, where it is set once.
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "exporter.__version__"}
    assert version.group(1) == __version__


def test_dockerignore_lets_in_exactly_what_the_build_stage_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # An allow-list: everything out (the venv, state files, .git), then the sources back in.
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {source.rstrip("/") for source in build_context_sources()}
    for source in allowed:
        assert (ROOT / source).exists(), source


@pytest.mark.e2e
def test_wheel_from_the_image_sources_serves_demo_metrics_from_a_fresh_venv(
    tmp_path: Path,
) -> None:
    """What the image would run: the wheel built from the COPY'd files alone, in a new venv."""
    deadline = time.monotonic() + 90

    def remaining() -> float:
        left = deadline - time.monotonic()
        assert left > 0, "the wheel test ran out of time"
        return left

    context = tmp_path / "context"
    for source in build_context_sources():
        src, dst = ROOT / source, context / source
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    wheels = tmp_path / "wheels"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(context), "-w", str(wheels)],
        timeout=remaining(),
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("neo_exporter-*.whl")

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=remaining())
    assert made.returncode == 0, made.stderr
    installed = run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        timeout=remaining(),
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    # As in the image: the venv first on PATH, the working directory the state volume.
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    (entrypoint,) = runtime("ENTRYPOINT")
    command = [str(venv / "bin" / exec_form(entrypoint)[0])]
    proc = subprocess.Popen(
        [*command, "--demo", "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=state,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def demo_metrics() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"the exporter exited with {proc.returncode}")
            response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            return response.text if "neo_streams_total{" in response.text else None

        wait_until(demo_metrics, min(60.0, remaining()), "neo_streams_total on /metrics")

        # The image's HEALTHCHECK, as written, with the test's port.
        check = [arg.replace(f":{EXPORTER_PORT}/", f":{port}/") for arg in healthcheck_command()]
        healthy = run(check, timeout=10, env=env, cwd=state)
        assert healthy.returncode == 0, healthy.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=min(20.0, remaining())) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        output = proc.stdout.read() if proc.stdout else ""
    assert "listening on" in output, output
    # A demo start is clean: no warnings (a full connection pool once logged one) or errors.
    assert not [line for line in output.splitlines() if " WARNING " in line or " ERROR " in line]


# --- compose ----------------------------------------------------------------------------


def mount_tree(service: str, root: Path) -> Path:
    """Lay out `root` as the service's container sees its bind mounts (as symlinks)."""
    for volume in compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith("."):
            continue  # a named volume: empty at first start
        host = (COMPOSE_DIR / source).resolve()
        assert host.exists(), f"{service}: mounts {source}, which does not exist"
        inside = root / PurePosixPath(target).relative_to("/")
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.symlink_to(host)
    return root


def test_compose_file_matches_the_compose_spec() -> None:
    checker = require_tool("check-jsonschema")
    result = run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_builds_this_repository_and_runs_the_exporter_in_demo_mode() -> None:
    services = compose()["services"]
    exporter = services["neo-exporter"]
    assert (COMPOSE_DIR / exporter["build"]["context"]).resolve() == ROOT
    assert "--demo" in exporter["command"]
    assert any(p.endswith(f":{EXPORTER_PORT}") for p in exporter["ports"])
    # Prometheus waits for the image's HEALTHCHECK to pass.
    condition = services["prometheus"]["depends_on"]["neo-exporter"]["condition"]
    assert condition == "service_healthy"


def test_compose_prometheus_config_with_its_mounted_rules_passes_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    require_dir(RULES_DIR, "Prometheus rules")
    root = mount_tree("prometheus", tmp_path)
    config_path = root / "etc" / "prometheus" / "prometheus.yml"
    result = run([promtool, "check", "config", str(config_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool found and checked every shipped rule file through the mount.
    checked = set(re.findall(r"Checking \S*/rules/(\S+\.rules\.yml)", result.stdout))
    assert checked == {p.name for p in RULES_DIR.glob("*.rules.yml")}, result.stdout

    config = yaml.safe_load(config_path.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "neo-exporter"  # the alert NeoExporterDown matches it
    assert job["static_configs"][0]["targets"] == [f"neo-exporter:{EXPORTER_PORT}"]


def test_compose_alertmanager_runs_the_shipped_config_and_prometheus_sends_to_it(
    tmp_path: Path,
) -> None:
    amtool = require_tool("amtool")
    services = compose()["services"]
    service = services["alertmanager"]
    root = mount_tree("alertmanager", tmp_path)
    (config_flag,) = [arg for arg in service["command"] if arg.startswith("--config.file=")]
    config_path = root / PurePosixPath(config_flag.partition("=")[2]).relative_to("/")
    # The mounted file is the shipped one, and the template it loads sits beside it.
    assert config_path.resolve() == ALERTMANAGER_CONFIG.resolve()
    result = run([amtool, "check-config", str(config_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout, result.stdout
    assert any(port.endswith(":9093") for port in service["ports"])

    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (alertmanagers,) = prometheus["alerting"]["alertmanagers"]
    # Alertmanager's default listen address is :9093, on the compose service's name.
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert "alertmanager" in services["prometheus"]["depends_on"]


def test_compose_grafana_provisions_prometheus_and_the_mounted_dashboards(
    tmp_path: Path,
) -> None:
    require_dir(DASHBOARD_DIR, "Grafana dashboards")
    service = compose()["services"]["grafana"]
    root = mount_tree("grafana", tmp_path)
    provisioning = root / "etc" / "grafana" / "provisioning"

    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.yaml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    (default,) = [source for source in datasources if source.get("isDefault")]
    assert default["type"] == "prometheus"
    # The URL names the compose service and the port Prometheus listens on.
    assert default["url"] == "http://prometheus:9090"
    assert "prometheus" in compose()["services"]

    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.yaml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    assert providers
    for provider in providers:
        folder = root / PurePosixPath(provider["options"]["path"]).relative_to("/")
        dashboards = sorted(folder.glob("*.json"))
        assert dashboards, f"provider {provider['name']}: no dashboards in {folder}"
        for path in dashboards:
            assert_dashboard_uses_the_provisioned_datasource(json.loads(path.read_text()), path)

    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (root / PurePosixPath(home).relative_to("/")).is_file(), home


def assert_dashboard_uses_the_provisioned_datasource(dashboard: dict[str, Any], path: Path) -> None:
    """Every panel asks a data source variable of type prometheus, which picks the default."""
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}

    def refs(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    for ref in refs(dashboard.get("panels", [])):
        uid = ref.get("uid", "") if isinstance(ref, dict) else str(ref)
        match = re.fullmatch(r"\$\{?(\w+)\}?", uid)
        assert match, f"{path.name}: data source {ref!r} is not a variable"
        variable = variables[match.group(1)]
        assert variable["type"] == "datasource" and variable["query"] == "prometheus", path.name


def test_deploy_yaml_passes_yamllint() -> None:
    yamllint = require_tool("yamllint")
    result = run([yamllint, "--strict", "-c", ".yamllint.yaml", "."], cwd=ROOT / "deploy")
    assert result.returncode == 0, result.stdout + result.stderr


# --- Helm chart -------------------------------------------------------------------------

TOKEN = "test-token-not-real"
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {"secret": {"tokens": {"default": TOKEN}}},
    "existing-secret-no-persistence": {
        "accounts": [
            {"name": "team-a"},
            {"name": "team-b", "tokenKey": "b", "auth_header": "x-api-key"},
        ],
        "existingSecret": "neo-tokens",
        "persistence": {"enabled": False},
        "config": {"polling": {"interval": "2m"}, "http": {"concurrency": 2}},
    },
    "prometheus-operator": {
        "secret": {"tokens": {"default": TOKEN}},
        "persistence": {"existingClaim": "neo-state"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True},
        "alertmanagerConfig": {"enabled": True},
    },
}


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    module = require_module("helm_python", "pip install helm-python-sdk")
    module.disable_logging()  # it logs the rules link at INFO on every load
    return module


def needs_rules(values: dict[str, Any]) -> None:
    if values.get("prometheusRule", {}).get("enabled"):
        require_dir(RULES_DIR, "Prometheus rules for the PrometheusRule")


def test_chart_passes_helm_lint_strict(helm: ModuleType) -> None:
    for name, values in VALUE_SETS.items():
        needs_rules(values)
        report = helm.lint(str(CHART), values, strict=True, namespace="monitoring")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"{name}: {problems}"


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_rendered_manifests_match_the_kubernetes_schemas(
    helm: ModuleType, values_name: str
) -> None:
    validate = require_module("kubernetes_validate", "pip install kubernetes-validate")
    values = VALUE_SETS[values_name]
    needs_rules(values)
    manifests = render(helm, values)
    builtin = [m for m in manifests if not m["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {m["kind"] for m in builtin} >= {"Deployment", "Service", "ConfigMap"}
    for version in KUBERNETES_VERSIONS:
        wanted = validate.latest_version() if version == "latest" else version
        for manifest in builtin:
            # strict: unknown fields are errors too, as with kubectl's server-side validation.
            validate.validate(manifest, wanted, strict=True)


def test_deployment_is_one_writer_replaced_by_recreate(helm: ModuleType) -> None:
    for values in VALUE_SETS.values():
        needs_rules(values)
        spec = one(render(helm, values), "Deployment")["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
    # There is no value to change that: two replicas would each count every stream.
    assert "replicas" not in yaml.safe_load((CHART / "values.yaml").read_text())


def test_pod_runs_as_the_image_uid_read_only_without_privilege_escalation(
    helm: ModuleType,
) -> None:
    pod = one(render(helm, VALUE_SETS["defaults"]), "Deployment")["spec"]["template"]["spec"]
    (user,) = runtime("USER")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_probes_ask_healthy_for_liveness_and_ready_for_readiness(helm: ModuleType) -> None:
    pod = one(render(helm, VALUE_SETS["defaults"]), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": EXPORTER_PORT, "protocol": "TCP"}


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_rendered_config_is_accepted_by_the_exporter_and_matches_the_pod(
    helm: ModuleType, values_name: str, tmp_path: Path
) -> None:
    values = VALUE_SETS[values_name]
    needs_rules(values)
    manifests = render(helm, values)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}

    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(manifests, "ConfigMap")["data"]["config.yaml"])
    assert f"--config.file={mounts['config']}/config.yaml" in container["args"]
    # The token variables the config names are the ones the pod gets from the Secret.
    env = {item["name"]: f"token-of-{item['name']}" for item in container["env"]}
    config = load_config(str(config_file), env)

    names = [account["name"] for account in values.get("accounts", [{"name": "default"}])]
    assert [account.name for account in config.accounts] == names
    assert sorted(account.token.reveal() for account in config.accounts) == sorted(
        f"token-of-{name}" for name in env
    )
    assert config.state.path.startswith(mounts["state"] + "/")
    assert config.web.listen_address == f":{container['ports'][0]['containerPort']}"
    if "interval" in values.get("config", {}).get("polling", {}):
        assert config.polling.interval == 120

    secret_name = values.get("existingSecret") or one(manifests, "Secret")["metadata"]["name"]
    for item in container["env"]:
        assert item["valueFrom"]["secretKeyRef"]["name"] == secret_name
    if not values.get("existingSecret"):
        keys = set(one(manifests, "Secret")["stringData"])
        assert {item["valueFrom"]["secretKeyRef"]["key"] for item in container["env"]} <= keys


def test_state_is_a_kept_claim_by_default_and_an_empty_dir_when_persistence_is_off(
    helm: ModuleType,
) -> None:
    manifests = render(helm, VALUE_SETS["defaults"])
    claim = one(manifests, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {
        v["name"]: v for v in one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]

    manifests = render(helm, VALUE_SETS["existing-secret-no-persistence"])
    assert not [m for m in manifests if m["kind"] in ("PersistentVolumeClaim", "Secret")]
    volumes = {
        v["name"]: v for v in one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["state"] == {"name": "state", "emptyDir": {}}


def test_chart_refuses_an_account_without_a_token(helm: ModuleType) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"secret\.tokens\.default: no token"):
        render(helm, {})


def shipped_rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(require_dir(RULES_DIR, "Prometheus rules").glob("*.rules.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def test_chart_rules_are_a_link_to_the_repository_rules_not_a_copy() -> None:
    link = CHART / "rules"
    assert link.is_symlink(), "deploy/helm/neo-exporter/rules must link to prometheus/rules"
    assert os.readlink(link) == "../../../prometheus/rules"  # relative: works in any clone
    assert link.resolve() == RULES_DIR.resolve()


def test_chart_without_its_rules_link_refuses_to_render_the_prometheus_rule(
    helm: ModuleType, tmp_path: Path
) -> None:
    """Without symbolic links, git checks the link out as a small text file: fail loudly."""
    chart = tmp_path / "neo-exporter"
    shutil.copytree(CHART, chart, symlinks=True)
    (chart / "rules").unlink()
    (chart / "rules").write_text("../../../prometheus/rules")
    assert render(helm, VALUE_SETS["defaults"], chart)  # the rest renders without rules
    with pytest.raises(helm.HelmRenderError, match="is the rules link to prometheus/rules"):
        render(helm, VALUE_SETS["prometheus-operator"], chart)
    # A dangling link is refused by Helm itself, when the chart is loaded.
    (chart / "rules").unlink()
    (chart / "rules").symlink_to(tmp_path / "nowhere")
    with pytest.raises(helm.HelmChartLoadError, match="symlink"):
        render(helm, VALUE_SETS["defaults"], chart)


def test_prometheus_rule_holds_the_shipped_groups_and_passes_promtool(
    helm: ModuleType, tmp_path: Path
) -> None:
    promtool = require_tool("promtool")
    groups = shipped_rule_groups()
    rule = one(render(helm, VALUE_SETS["prometheus-operator"]), "PrometheusRule")
    # Read as data, not templates: the alerts' own {{ $labels }} templates arrive intact.
    assert rule["spec"]["groups"] == groups
    rules_file = tmp_path / "rendered.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = run([promtool, "check", "rules", str(rules_file)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_packaged_chart_carries_the_rule_files_themselves(helm: ModuleType, tmp_path: Path) -> None:
    """`helm package` follows the link, so a chart installed from the .tgz has the rules."""
    groups = shipped_rule_groups()
    archive = Path(helm.package(str(CHART), destination=str(tmp_path)))
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for path in sorted(RULES_DIR.glob("*.rules.yml")):
            member = members[f"neo-exporter/rules/{path.name}"]
            assert member.isfile()
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == path.read_bytes()
    with helm.Chart.load_archive(archive.read_bytes()) as loaded:
        rendered = loaded.render(
            VALUE_SETS["prometheus-operator"], name="neo-exporter", namespace="monitoring"
        )
    assert one(manifests_of(rendered), "PrometheusRule")["spec"]["groups"] == groups


# The fields of the Prometheus Operator CRDs the chart uses, transcribed from
# monitoring.coreos.com/v1 (no schema for them ships in kubernetes-validate).
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?)$"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {"name": {"type": "string"}, "labels": LABELS},
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": LABELS},
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "properties": {
                                        "record": {"type": "string"},
                                        "alert": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": DURATION,
                                        "labels": LABELS,
                                        "annotations": LABELS,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


MATCHERS = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["name", "value", "matchType"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "value": {"type": "string"},
            "matchType": {"enum": ["=", "!=", "=~", "!~"]},
        },
    },
}
ROUTE: dict[str, Any] = {
    "type": "object",
    "required": ["receiver"],
    "additionalProperties": False,
    "properties": {
        "receiver": {"type": "string"},
        "matchers": MATCHERS,
        "groupBy": {"type": "array", "items": {"type": "string"}},
        "groupWait": DURATION,
        "groupInterval": DURATION,
        "repeatInterval": DURATION,
        "continue": {"type": "boolean"},
        "routes": {"type": "array", "items": {"$ref": "#/$defs/route"}},
    },
}
# monitoring.coreos.com/v1alpha1, the fields the chart uses.
ALERTMANAGER_CONFIG_SCHEMA = {
    "$defs": {"route": ROUTE},
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1alpha1"},
        "kind": {"const": "AlertmanagerConfig"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["route", "receivers"],
            "properties": {
                "route": {"$ref": "#/$defs/route"},
                "inhibitRules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "sourceMatch": MATCHERS,
                            "targetMatch": MATCHERS,
                            "equal": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
                "receivers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                },
            },
        },
    },
}


def test_prometheus_operator_resources_have_the_crd_shapes(helm: ModuleType) -> None:
    require_dir(RULES_DIR, "Prometheus rules for the PrometheusRule")
    jsonschema = require_module("jsonschema", "pip install check-jsonschema")
    manifests = render(helm, VALUE_SETS["prometheus-operator"])
    jsonschema.validate(one(manifests, "ServiceMonitor"), SERVICE_MONITOR_SCHEMA)
    jsonschema.validate(one(manifests, "PrometheusRule"), PROMETHEUS_RULE_SCHEMA)
    jsonschema.validate(one(manifests, "AlertmanagerConfig"), ALERTMANAGER_CONFIG_SCHEMA)


def operator_matchers(matchers: list[dict[str, str]]) -> list[str]:
    """The Operator's structured matchers as alertmanager.yml writes them."""
    return [f'{m["name"]}{m["matchType"]}"{m["value"]}"' for m in matchers]


def as_alertmanager_route(route: dict[str, Any]) -> dict[str, Any]:
    keys = {
        "receiver": "receiver",
        "groupBy": "group_by",
        "groupWait": "group_wait",
        "groupInterval": "group_interval",
        "repeatInterval": "repeat_interval",
    }
    converted: dict[str, Any] = {keys[k]: v for k, v in route.items() if k in keys}
    if "matchers" in route:
        converted["matchers"] = operator_matchers(route["matchers"])
    if "routes" in route:
        converted["routes"] = [as_alertmanager_route(r) for r in route["routes"]]
    return converted


def test_alertmanager_config_renders_the_routes_of_the_shipped_alertmanager_yml(
    helm: ModuleType,
) -> None:
    shipped = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert not [
        m for m in render(helm, VALUE_SETS["defaults"]) if m["kind"] == "AlertmanagerConfig"
    ]
    spec = one(render(helm, VALUE_SETS["prometheus-operator"]), "AlertmanagerConfig")["spec"]
    assert as_alertmanager_route(spec["route"]) == shipped["route"]
    inhibit = [
        {
            "source_matchers": operator_matchers(rule["sourceMatch"]),
            "target_matchers": operator_matchers(rule["targetMatch"]),
            "equal": rule["equal"],
        }
        for rule in spec["inhibitRules"]
    ]
    assert inhibit == shipped["inhibit_rules"]
    names = {receiver["name"] for receiver in spec["receivers"]}
    assert names == {receiver["name"] for receiver in shipped["receivers"]}
    # The placeholders by default; the values give each receiver its own notifiers.
    slack = {"slackConfigs": [{"channel": "#neo-spend", "apiURL": {"name": "s", "key": "url"}}]}
    values = {
        **VALUE_SETS["prometheus-operator"],
        "alertmanagerConfig": {
            "enabled": True,
            "receivers": [{"name": "neo-spend", **slack}, {"name": "neo-exporter-ops"}],
        },
    }
    receivers = one(render(helm, values), "AlertmanagerConfig")["spec"]["receivers"]
    assert receivers == [{"name": "neo-spend", **slack}, {"name": "neo-exporter-ops"}]


def test_alertmanager_config_refuses_to_route_to_a_receiver_it_lacks(helm: ModuleType) -> None:
    values = {
        **VALUE_SETS["prometheus-operator"],
        "alertmanagerConfig": {"enabled": True, "receivers": [{"name": "neo-spend"}]},
    }
    with pytest.raises(helm.HelmRenderError, match=r"receivers\.neo-exporter-ops: missing"):
        render(helm, values)


def test_service_monitor_scrapes_the_service_as_the_job_the_alerts_expect(
    helm: ModuleType,
) -> None:
    manifests = render(helm, VALUE_SETS["prometheus-operator"])
    monitor, service = one(manifests, "ServiceMonitor"), one(manifests, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # A ServiceMonitor selects Services by their labels, then scrapes the named port.
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == "neo-exporter"
    text = "".join(path.read_text() for path in require_dir(RULES_DIR, "rules").glob("*.rules.yml"))
    wanted = set(re.findall(r'job="([^"]+)"', text))
    assert wanted == {job}, f"the rules select job {wanted}, the ServiceMonitor gives {job}"


def test_prometheus_rule_runbook_links_take_the_base_url_set_once_in_the_values(
    helm: ModuleType,
) -> None:
    base = "https://wiki.example.com/neo-exporter/docs"
    values = {**VALUE_SETS["prometheus-operator"], "prometheusRule": {"enabled": True}}
    needs_rules(values)
    values["prometheusRule"]["runbookBaseUrl"] = base + "/"
    rule = one(render(helm, values), "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    for alert in alerts:
        expected = f"{base}/dashboards.md#{alert['alert'].lower()}"
        assert alert["annotations"]["runbook_url"] == expected
    # Everything else is as shipped.
    shipped = shipped_rule_groups()
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            item.get("annotations", {}).pop("runbook_url", None)
    for group in shipped:
        for item in group["rules"]:
            item.get("annotations", {}).pop("runbook_url", None)
    assert rule["spec"]["groups"] == shipped


def test_the_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    """A TOML table made setuptools warn four times per install; a string needs >= 77."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_extra_environment_variables_reach_the_exporter_for_a_proxy_or_a_ca_bundle(
    helm: ModuleType,
) -> None:
    proxy = {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}
    values = {**VALUE_SETS["defaults"], "extraEnv": [proxy]}
    deployment = one(render(helm, values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert proxy in container["env"]
    assert container["env"][0]["name"] != "HTTPS_PROXY"  # after the tokens, not instead
