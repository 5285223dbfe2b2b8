"""compose.yaml, the Dockerfile, .dockerignore and deploy/, read as files: nothing here starts a container.

No container engine can run the stack where these tests run (its base images cannot be pulled), so
what can go wrong on paper is checked on paper, against the code the containers would run: the
settings class, the CLI's parser, the metrics registries. Compose's `${...}` interpolation and
Docker's `.dockerignore` matching are simulated here, each pinned by a test of its own.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.metrics import METRICS_PATH
from domain.assistant_file import load_assistants_file
from domain.metrics import ApiMetrics, WorkerMetrics
from domain.settings import Settings
from switchboard.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
# The services that run Switchboard's image; the rest run someone else's.
APP = ("migrate", "api", "worker")
OBSERVABILITY = ("prometheus", "grafana")
# What compose sets itself instead of passing through: where things are inside its own network.
WIRING = {
    "SWITCHBOARD_DATABASE_URL",
    "SWITCHBOARD_REDIS_URL",
    "SWITCHBOARD_ASSISTANTS_FILE",
    "SWITCHBOARD_WORKER_METRICS_PORT",
    "SWITCHBOARD_WORKER_METRICS_HOST",
}
# The secrets compose insists on, with values an operator might give.
SECRETS = {"POSTGRES_PASSWORD": "s3cretpw", "SWITCHBOARD_API_KEYS": "k1=alice"}
SETTINGS = {f"SWITCHBOARD_{name.upper()}" for name in Settings.model_fields}


def load_yaml(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def compose() -> dict[str, Any]:
    loaded = load_yaml("compose.yaml")
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


# ------------------------------------------------------------------ compose's interpolation, simulated


class MissingVariable(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name
        self.message = message


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`text` as compose reads it: `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`,
    `${NAME?message}`, `$NAME`, and `$$` for a `$`. Like compose, a default is expanded even when unused."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif text[i] == "$" and (bare := _NAME.match(text, i + 1)):
            out.append(env.get(bare.group(), ""))
            i = bare.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise AssertionError(f"unclosed ${{ in {text!r}")


def _substitute(body: str, env: Mapping[str, str]) -> str:
    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", body, re.DOTALL)
    assert match, f"not a compose variable: ${{{body}}}"
    name, operator, argument = match.groups()
    value = env.get(name)
    if operator is None:
        return value or ""
    argument = interpolate(argument, env)
    missing = value is None or (operator.startswith(":") and value == "")
    if operator.endswith("-"):
        return argument if missing else str(value)
    if missing:
        raise MissingVariable(name, argument)
    return str(value)


def resolved(value: Any, env: Mapping[str, str]) -> Any:
    """Every string of a parsed file interpolated, as compose does after parsing the YAML."""
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [resolved(item, env) for item in value]
    if isinstance(value, dict):
        return {key: resolved(item, env) for key, item in value.items()}
    return value


def resolved_services(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = resolved(compose(), env)["services"]
    return found


def test_the_interpolation_simulation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET}-$SET-$$SET", env) == "x--x-$SET"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET:-${SET}}", env) == "d  d x"
    assert interpolate("${EMPTY?m}|${SET:?m}", env) == "|x"
    for template in ("${UNSET?say this}", "${EMPTY:?say this}", "${SET:-${UNSET:?say this}}"):
        with pytest.raises(MissingVariable, match="say this"):
            interpolate(template, env)


# ------------------------------------------------------------------ compose.yaml


def test_compose_has_the_stack_and_the_observability_profile() -> None:
    loaded = compose()
    found = loaded["services"]
    assert set(found) == {"redis", "postgres", *APP, *OBSERVABILITY}
    for name, service in found.items():
        expected = ["observability"] if name in OBSERVABILITY else None
        assert service.get("profiles") == expected, name
    # Every named volume a service mounts is declared.
    named = {
        (volume["source"] if isinstance(volume, dict) else volume.split(":")[0])
        for service in found.values()
        for volume in service.get("volumes", [])
        if (volume.get("type") == "volume" if isinstance(volume, dict) else not volume.startswith((".", "/", "$")))
    }
    assert named and named <= set(loaded["volumes"]), named - set(loaded["volumes"])


def test_one_image_is_built_once_and_run_by_every_switchboard_service() -> None:
    found = services()
    builders = [name for name, service in found.items() if "build" in service]
    # migrate builds: api and worker depend on it, so whatever is started, the image gets built.
    assert builders == ["migrate"]
    build = found["migrate"]["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    images = {found[name]["image"] for name in APP}
    assert len(images) == 1, images
    for name in ("api", "worker"):
        # Never looked for in a registry, where it is not.
        assert found[name]["pull_policy"] == "never", name
        assert found[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_every_setting_reaches_every_switchboard_service() -> None:
    for name, service in services().items():
        if name not in APP:
            continue
        variables = {key for key in service["environment"] if key.startswith("SWITCHBOARD_")}
        assert variables - SETTINGS == set(), f"{name} sets variables Settings does not know"
        assert SETTINGS - variables == set(), f"{name} does not pass these settings through"
        # And `.env` whole, for the variables no list names (OTEL_*, those of the assistants file).
        assert service["env_file"] == [{"path": ".env", "required": False}], name


def test_each_setting_passes_through_under_its_own_name() -> None:
    """`SWITCHBOARD_X: ${SWITCHBOARD_X...}`, so that a copy-paste slip cannot feed one setting another's value."""
    for name in APP:
        for key, value in services()[name]["environment"].items():
            if key in WIRING:
                # Compose's own wiring: never taken from `.env`, which may be scripts/dev's.
                assert "${SWITCHBOARD_" not in str(value), key
            else:
                assert re.fullmatch(rf"\$\{{{key}(?:(?::?[-?]).*)?\}}", str(value), re.DOTALL), f"{key}: {value}"


def test_every_switchboard_variable_compose_reads_is_a_setting() -> None:
    text = (ROOT / "compose.yaml").read_text()
    read = set(re.findall(r"\$\{(SWITCHBOARD_[A-Z0-9_]+)", text))
    for service in services().values():
        environment = service.get("environment") or {}
        read |= {key for key in environment if key.startswith("SWITCHBOARD_")}
    assert read and read - SETTINGS == set()


def _settings_of(service: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container of `service` would build from its environment (with no `.env`)."""
    for key in list(SETTINGS):
        monkeypatch.delenv(key, raising=False)
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, str(value))
    return Settings(_env_file=None)


def test_with_only_the_secrets_set_every_service_gets_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    found = resolved_services(SECRETS)
    for name in APP:
        settings = _settings_of(found[name], monkeypatch)
        assert settings.database_url == "postgresql+asyncpg://switchboard:s3cretpw@postgres:5432/switchboard"
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.api_keys == {"k1": "alice"}
        assert settings.worker_metrics_port == 9100 and settings.worker_metrics_host == "0.0.0.0"
        # /mcp answers what it answers outside compose, and the `api` name containers use.
        assert set(Settings.model_fields["mcp_allowed_hosts"].get_default(call_default_factory=True)) <= set(
            settings.mcp_allowed_hosts
        )
        assert {"api", "api:*"} <= set(settings.mcp_allowed_hosts)
        # Everything else is the settings' own default.
        assert settings.llm_provider == "demo" and settings.auth == "required" and settings.log_level == "INFO"
    # The database PostgreSQL creates is the one the URL names, with the same password.
    postgres = found["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]) == (
        "switchboard",
        "s3cretpw",
        "switchboard",
    )


def test_what_the_environment_gives_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    given = {
        **SECRETS,
        "SWITCHBOARD_AUTH": "none",
        "SWITCHBOARD_API_KEYS": "",
        "SWITCHBOARD_JWT_ISSUER": "https://issuer.example",
        "SWITCHBOARD_LOG_LEVEL": "DEBUG",
        "SWITCHBOARD_RUN_TIMEOUT_S": "42",
        "SWITCHBOARD_MCP_ALLOWED_HOSTS": "todo.example.com",
        # Compose's wiring wins over a development `.env`'s.
        "SWITCHBOARD_DATABASE_URL": "sqlite+aiosqlite:///./var/switchboard.db",
    }
    settings = _settings_of(resolved_services(given)["worker"], monkeypatch)
    assert settings.auth == "none" and settings.api_keys == {}
    assert settings.jwt_issuer == "https://issuer.example"
    assert settings.log_level == "DEBUG" and settings.run_timeout_s == 42
    assert settings.mcp_allowed_hosts == ["todo.example.com"]
    assert settings.database_url.startswith("postgresql+asyncpg://")


@pytest.mark.parametrize("secret", sorted(SECRETS))
@pytest.mark.parametrize("given", [None, ""], ids=["unset", "empty"])
def test_a_missing_secret_stops_compose_with_a_message_naming_it(secret: str, given: str | None) -> None:
    env = {key: value for key, value in SECRETS.items() if key != secret}
    if given is not None:
        env[secret] = given
    if secret == "SWITCHBOARD_API_KEYS" and given == "":
        # Set empty on purpose: JWT, or SWITCHBOARD_AUTH=none, authenticates instead.
        resolved_services(env)
        return
    with pytest.raises(MissingVariable) as caught:
        resolved_services(env)
    assert caught.value.name == secret
    assert secret in caught.value.message and ".env" in caught.value.message
    if secret == "SWITCHBOARD_API_KEYS":
        assert "SWITCHBOARD_AUTH=none" in caught.value.message
        assert "SWITCHBOARD_JWT_SECRET" in caught.value.message


def test_no_secret_is_written_in_the_file() -> None:
    found = services()
    assert str(found["postgres"]["environment"]["POSTGRES_PASSWORD"]).startswith("${POSTGRES_PASSWORD:?")
    secret_settings = {"SWITCHBOARD_API_KEYS", "SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_LLM_API_KEY"}
    for name in APP:
        for key in secret_settings | {"SWITCHBOARD_METRICS_TOKEN", "SWITCHBOARD_TRUSTED_FRONTEND_KEYS"}:
            assert str(found[name]["environment"][key]).startswith("${" + key), key
    url = found["api"]["environment"]["SWITCHBOARD_DATABASE_URL"]
    assert re.search(r"switchboard:\$\{POSTGRES_PASSWORD:\?[^}]*\}@", url), url


def _commands() -> Iterator[tuple[str, list[str]]]:
    for name, service in services().items():
        command = service.get("command")
        if isinstance(command, list) and command[0] == "switchboard":
            yield f"{name} command", command
        test = service.get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "switchboard"]:
            yield f"{name} healthcheck", test[1:]
    yield "Dockerfile CMD", dockerfile_cmd()


def test_every_command_is_one_the_cli_accepts() -> None:
    commands = list(_commands())
    # The three roles, the two healthchecks and the image's default command.
    assert len(commands) == 6, commands
    for where, command in commands:
        try:
            build_parser().parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"{where}: {command} is not a command line `switchboard` accepts")


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_api_listens_where_compose_publishes_checks_and_scrapes_it() -> None:
    found = services()
    command = found["api"]["command"]
    port = _option(command, "--port")
    # In a container the API must listen beyond loopback.
    assert _option(command, "--host") == "0.0.0.0"
    assert [mapping.rsplit(":", 1)[-1] for mapping in found["api"]["ports"]] == [port]
    assert _option(found["api"]["healthcheck"]["test"], "--port") == port
    [job] = [job for job in prometheus_jobs() if job["job_name"] == "switchboard-api"]
    assert job["metrics_path"] == METRICS_PATH
    assert job["dns_sd_configs"] == [{"names": ["api"], "type": "A", "port": int(port), "refresh_interval": "15s"}]
    assert dockerfile_cmd() == command


def test_long_running_services_restart_and_report_their_health() -> None:
    found = services()
    for name, service in found.items():
        if name == "migrate":
            assert service["restart"] == "no" and "healthcheck" not in service
            continue
        assert service["restart"] in ("unless-stopped", "always"), name
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert found["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert found[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    # The worker gets longer to stop than its own grace period for the runs it carries.
    grace_s = Settings.model_fields["worker_grace_s"].default
    assert int(found["worker"]["stop_grace_period"].removesuffix("s")) > grace_s


def test_the_assistants_file_is_mounted_read_only_and_the_default_one_adds_none() -> None:
    found = resolved_services(SECRETS)
    for name in APP:
        target = found[name]["environment"]["SWITCHBOARD_ASSISTANTS_FILE"]
        [mount] = [volume for volume in found[name]["volumes"] if volume["target"] == target]
        assert mount["type"] == "bind" and mount["read_only"] is True
        # Docker would otherwise make an empty directory of a missing file.
        assert mount["bind"] == {"create_host_path": False}
        default = ROOT / mount["source"]
        assert default.is_file()
        assert load_assistants_file(default) == ()
    # SWITCHBOARD_ASSISTANTS_FILE names the file on this machine, as it does for scripts/dev.
    given = resolved_services({**SECRETS, "SWITCHBOARD_ASSISTANTS_FILE": "/srv/mine.toml"})
    assert [v["source"] for v in given["worker"]["volumes"]] == ["/srv/mine.toml"]
    assert given["worker"]["environment"]["SWITCHBOARD_ASSISTANTS_FILE"] == target


# ------------------------------------------------------------------ Prometheus and Grafana


def prometheus_jobs() -> list[dict[str, Any]]:
    config = load_yaml("deploy/prometheus/prometheus.yml")
    jobs: list[dict[str, Any]] = config["scrape_configs"]
    return jobs


def test_prometheus_finds_every_worker_where_it_serves_its_metrics() -> None:
    worker = resolved_services(SECRETS)["worker"]
    port = worker["environment"]["SWITCHBOARD_WORKER_METRICS_PORT"]
    assert worker["expose"] == [port]
    [job] = [job for job in prometheus_jobs() if job["job_name"] == "switchboard-worker"]
    # DNS discovery: one target for each container of `--scale worker=N`.
    assert job["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": int(port), "refresh_interval": "15s"}]
    assert job["metrics_path"] == METRICS_PATH


def _mount_target(service: Mapping[str, Any], source: str) -> str:
    [target] = [volume.split(":")[1] for volume in service["volumes"] if volume.split(":")[0] == source]
    assert (ROOT / source).exists(), source
    return target


def test_prometheus_runs_the_config_and_sends_the_metrics_token() -> None:
    service = services()["prometheus"]
    script = service["entrypoint"][-1]
    config = _mount_target(service, "./deploy/prometheus/prometheus.yml")
    assert f"--config.file={config}" in script
    # The token is written where the API's job reads it, from the variable the API reads.
    [token_file] = re.findall(r'printf \'%s\' "\$\$SWITCHBOARD_METRICS_TOKEN" > (\S+)', script)
    [job] = [job for job in prometheus_jobs() if job["job_name"] == "switchboard-api"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": token_file}
    assert service["environment"]["SWITCHBOARD_METRICS_TOKEN"] == "${SWITCHBOARD_METRICS_TOKEN:-}"
    assert token_file.startswith("/prometheus/")  # the data volume: written by Prometheus's own user
    assert interpolate(script, {}).count("$SWITCHBOARD_METRICS_TOKEN") == 1  # for the shell, not compose


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    service = services()["grafana"]
    provisioning = _mount_target(service, "./deploy/grafana/provisioning")
    dashboards = _mount_target(service, "./deploy/grafana/dashboards")
    assert provisioning == "/etc/grafana/provisioning"
    [source] = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert services()["prometheus"]["ports"] == ["${PROMETHEUS_PORT:-127.0.0.1:9090}:9090"]
    [provider] = load_yaml("deploy/grafana/provisioning/dashboards/switchboard.yml")["providers"]
    assert provider["options"]["path"] == dashboards
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert posixpath.dirname(home) == dashboards
    assert (ROOT / "deploy/grafana/dashboards" / posixpath.basename(home)).is_file()


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "deploy/grafana/dashboards/switchboard.json").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    board = dashboard()
    queries = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    queries += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def exposed_series() -> dict[str, set[str]]:
    """Every series name the API's and a worker's registries expose, with its labels, after one of each event."""
    api, worker = ApiMetrics(), WorkerMetrics(assistants=["assistant"])
    worker.run_started(assistant="assistant")
    worker.run_finished(assistant="assistant", ending="succeeded", duration_s=1.0)
    worker.tool_call(tool="tool", outcome="ok")
    worker.tokens(input_tokens=1, output_tokens=1)
    worker.queue_wait_s.observe(0.1)
    worker.ttft_s.observe(0.1)
    series: dict[str, set[str]] = {}
    for registry in (api.registry, worker.registry):
        for family in registry.collect():
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


CONTRACT = [
    "switchboard_runs_started_total",
    "switchboard_runs_finished_total",
    "switchboard_queue_depth",
    "switchboard_queue_oldest_age_seconds",
    "switchboard_queue_wait_seconds",
    "switchboard_ttft_seconds",
    "switchboard_run_duration_seconds",
    "switchboard_open_streams",
    "switchboard_tool_calls_total",
    "switchboard_approvals_pending",
    "switchboard_model_tokens_total",
    "switchboard_reconciler_actions_total",
    "switchboard_dependency_errors_total",
]


def test_every_series_and_label_the_dashboard_queries_exists() -> None:
    series = exposed_series()
    queries = dashboard_queries()
    assert len(queries) >= len(CONTRACT)
    for query in queries:
        names = set(re.findall(r"\b((?:switchboard|process)_[a-z0-9_]+)", query))
        unknown = names - set(series)
        assert unknown == set(), f"{query}: no such series {unknown}"
        # Labels a selector or an aggregation names: the series' own, or those Prometheus adds.
        known = {"job", "instance", *(label for name in names for label in series[name])}
        used = set(re.findall(r"\bby \(([^)]*)\)", query))
        used = {label.strip() for group in used for label in group.split(",")}
        used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", query))
        assert used - known == set(), f"{query}: no such labels {used - known}"


def test_the_dashboard_shows_every_metric_of_the_contract() -> None:
    queried = " ".join(dashboard_queries())
    for name in CONTRACT:
        assert re.search(rf"\b{name}(_bucket)?\b", queried), name
    board = dashboard()
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    [source] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${" + source["name"] + "}", panel["title"]


# ------------------------------------------------------------------ the Dockerfile and its build context


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) for each instruction, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            instruction, _, arguments = pending.strip().partition(" ")
            instructions.append((instruction.upper(), " ".join(arguments.split())))
            pending = ""
    return instructions


def dockerfile_cmd() -> list[str]:
    [cmd] = [arguments for instruction, arguments in dockerfile() if instruction == "CMD"]
    parsed = json.loads(cmd)
    assert isinstance(parsed, list)
    return parsed


def copied() -> list[str]:
    """The sources of every COPY, as paths in the build context."""
    sources: list[str] = []
    for instruction, arguments in dockerfile():
        if instruction == "COPY":
            words = [word for word in arguments.split() if not word.startswith("--")]
            sources += [posixpath.normpath(word) for word in words[:-1]]
    return sources


def test_the_image_is_one_stage_not_root_and_installs_only_what_running_needs() -> None:
    instructions = dockerfile()
    assert [i for i, _ in instructions].count("FROM") == 1
    [user] = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert instructions[-1][0] == "CMD" and [i for i, _ in instructions].index("USER") > max(
        index for index, (instruction, _) in enumerate(instructions) if instruction == "RUN"
    )
    installs = [arguments for instruction, arguments in instructions if "pip install" in arguments]
    assert any("-r requirements.lock" in arguments for arguments in installs)
    assert not any("requirements-dev.lock" in arguments or "[test]" in arguments for arguments in installs)
    # The project itself, without resolving anything the lock did not pin.
    assert any("--no-deps -e ." in arguments for arguments in installs)


def test_the_image_holds_every_package_and_what_migrate_reads() -> None:
    sources = copied()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= set(sources), packages - set(sources)
    # `switchboard migrate` reads these beside the package (switchboard/migrate.py).
    assert {"alembic.ini", "migrations", "pyproject.toml", "requirements.lock"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source


# Docker's .dockerignore matching (moby's patternmatcher), simulated.


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        pattern = line.strip()
        exclusion = pattern.startswith("!")
        pattern = posixpath.normpath(pattern.removeprefix("!").strip()).lstrip("/")
        patterns.append((exclusion, _compile(pattern)))
    return patterns


def _compile(pattern: str) -> re.Pattern[str]:
    regex = "^"
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            regex += ".*" if i == len(pattern) else "(.*/)?"
            continue
        char = pattern[i]
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char in "[]":
            regex += char
        else:
            regex += re.escape(char)
        i += 1
    return re.compile(regex + "$")


def in_context(path: str, patterns: list[tuple[bool, re.Pattern[str]]] | None = None) -> bool:
    """Whether `path` reaches the build context: the last pattern matching it or a folder above it decides."""
    parents = path.split("/")[:-1]
    excluded = False
    for exclusion, pattern in dockerignore_patterns() if patterns is None else patterns:
        if exclusion != excluded:
            continue
        match = bool(pattern.match(path)) or any(pattern.match("/".join(parents[: i + 1])) for i in range(len(parents)))
        if match:
            excluded = not exclusion
    return not excluded


def test_the_dockerignore_simulation_follows_docker() -> None:
    def patterns(*lines: str) -> list[tuple[bool, re.Pattern[str]]]:
        return [(line.startswith("!"), _compile(line.removeprefix("!"))) for line in lines]

    everything_but_api = patterns("*", "!api")
    assert in_context("api/app.py", everything_but_api) and in_context("api", everything_but_api)
    assert not in_context("tests/test_x.py", everything_but_api)
    assert not in_context("a/b/__pycache__/c.pyc", patterns("**/__pycache__"))
    assert not in_context("__pycache__/c.pyc", patterns("**/__pycache__"))
    # `*.md` is the top folder's only; an exception re-includes what a folder pattern excluded.
    assert not in_context("NOTES.md", patterns("*.md")) and in_context("docs/NOTES.md", patterns("*.md"))
    assert in_context("docs/keep.md", patterns("docs", "!docs/keep.md"))
    assert not in_context("docs/other.md", patterns("docs", "!docs/keep.md"))
    assert not in_context("x/y.pyc", patterns("**/*.py[cod]"))


def git_files(*options: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", *options], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [path.rstrip("/") for path in listed.split("\0") if path]


def test_the_build_context_holds_every_file_the_image_copies() -> None:
    sources = copied()
    tracked = git_files()
    for source in sources:
        under = [path for path in tracked if path == source or path.startswith(source + "/")]
        assert under, f"{source}: nothing tracked there"
        left_out = [path for path in under if not in_context(path)]
        assert left_out == [], f".dockerignore leaves out files the image needs: {left_out}"


# Paths a checkout may hold that must never reach an image: secrets, local state, and what is heavy.
NEVER_IN_CONTEXT = [
    ".env",
    ".env.production",
    "api/.env",
    "var/switchboard.db",
    "var/dev-api-key",
    ".venv/bin/python",
    ".git/config",
    "server.pem",
    "api/server.pem",
    "switchboard/signing.key",
    "domain/local.sqlite3",
    "domain/__pycache__/settings.cpython-311.pyc",
    "switchboard.egg-info/PKG-INFO",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/api.json",
    "tests/test_compose.py",
    "bench/profiles/worker.prof",
    "requirements-dev.lock",
]


def test_the_build_context_holds_nothing_secret_nor_anything_the_image_does_not_use() -> None:
    ignored_here = git_files("--others", "--ignored", "--exclude-standard", "--directory")
    leaked = [path for path in NEVER_IN_CONTEXT + ignored_here if in_context(path)]
    assert leaked == [], f"these would reach the build context: {leaked}"
    # Whatever does reach it, the image copies: nothing rides along unused.
    sources = copied()
    unused = [
        path
        for path in git_files() + git_files("--others", "--exclude-standard")
        if in_context(path) and not any(path == source or path.startswith(source + "/") for source in sources)
    ]
    assert unused == [], f"in the build context but copied by no COPY: {unused}"
