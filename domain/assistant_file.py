"""The assistants file (`SWITCHBOARD_ASSISTANTS_FILE`): assistants defined beside the built-in ones.

A TOML file, read and checked once at start-up by the API and by every worker. Every mistake in it is
reported, each on one line naming where it is (`assistants.homelab.engine: must be ...`), and the
process does not start; see the README for the format.

Values of a server's `env`, `headers` and `args` may name variables, `${NAME}`. Only a worker expands
them, from its own environment, when it starts the server (`expand`); what this module reads and keeps
are the templates, so nothing built from the file carries a secret that could reach a log, an event,
the database or a client. The API never needs the variables at all.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, get_args

from domain.assistants import ASSISTANTS, ENGINES, AssistantInfo, Engine
from domain.errors import ConfigurationError
from domain.settings import LLMProvider
from domain.tool_policy import DEFAULT_TOOL_POLICY, TOOL_POLICIES, ToolPolicy, ToolRules

SETTING = "SWITCHBOARD_ASSISTANTS_FILE"

_ASSISTANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Server names are part of the tool names a model sees (`server_tool`) and of the policy keys (`server.tool`).
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

_ASSISTANT_KEYS = ("description", "instructions", "engine", "model", "users", "mcp_servers", "tools")
_STDIO_KEYS = ("command", "args", "env", "cwd")
_HTTP_KEYS = ("url", "headers")
_SERVER_KEYS = ("name", *_STDIO_KEYS, *_HTTP_KEYS, "timeout_s")
_PROVIDERS: tuple[LLMProvider, ...] = get_args(LLMProvider)


class AssistantsFileError(ConfigurationError):
    """The file cannot be used: one line per mistake."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


class MissingVariable(Exception):
    """A `${NAME}` whose variable is not set. Carries the name only, never a value."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the variable {name} is not set")
        self.name = name


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    """`model = "provider:model"`; `demo` has no model name."""

    provider: LLMProvider
    name: str | None


@dataclass(frozen=True, kw_only=True)
class StdioServer:
    """A server the worker runs as a child process and speaks to over its stdin and stdout."""

    name: str
    command: str
    # Templates: `${NAME}` is expanded by the worker when it starts the server.
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    # How long one tool call may take; None is SWITCHBOARD_MCP_TOOL_TIMEOUT_S.
    timeout_s: float | None = None
    # Where it is in the file, for messages: `assistants.homelab.mcp_servers[0]`.
    where: str = ""

    def templates(self) -> Iterator[tuple[str, str]]:
        """(where, template) of every value that may name variables."""
        for index, arg in enumerate(self.args):
            yield f"{self.where}.args[{index}]", arg
        for key, value in self.env.items():
            yield _key(f"{self.where}.env", key), value


@dataclass(frozen=True, kw_only=True)
class HttpServer:
    """A server the worker reaches over streamable HTTP."""

    name: str
    url: str
    # Templates: `${NAME}` is expanded by the worker when it opens the session.
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    where: str = ""

    def templates(self) -> Iterator[tuple[str, str]]:
        for key, value in self.headers.items():
            yield _key(f"{self.where}.headers", key), value


McpServerConfig = StdioServer | HttpServer


@dataclass(frozen=True, kw_only=True)
class FileAssistant:
    name: str
    description: str
    instructions: str
    engine: Engine
    # None: the configured provider and model (SWITCHBOARD_LLM_PROVIDER, SWITCHBOARD_LLM_MODEL).
    model: ModelChoice | None = None
    # Who may use it; None is everyone.
    users: frozenset[str] | None = None
    mcp_servers: tuple[McpServerConfig, ...] = ()
    tools: ToolRules = field(default_factory=ToolRules)

    def info(self) -> AssistantInfo:
        return AssistantInfo(
            name=self.name,
            description=self.description,
            engine=self.engine,
            provider=self.model.provider if self.model else None,
            users=self.users,
        )


def load_assistants_file(path: Path) -> tuple[FileAssistant, ...]:
    """The assistants the file defines, or `AssistantsFileError` with every mistake in it."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise AssistantsFileError([f"{SETTING}: cannot read '{path}': {exc.strerror or exc}"]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AssistantsFileError([f"{SETTING}: '{path}' is not valid TOML: {exc}"]) from exc
    return parse_assistants(data, source=str(path))


def parse_assistants(data: Mapping[str, Any], *, source: str) -> tuple[FileAssistant, ...]:
    """The assistants of a parsed file; `source` starts each line of the error."""
    reader = _Reader()
    assistants: list[FileAssistant] = []
    for key in data:
        if key != "assistants":
            reader.problem(_key("", key), "unknown key; the file holds [assistants.NAME] tables")
    table = reader.table(data.get("assistants", {}), "assistants")
    for name, value in (table or {}).items():
        assistant = reader.assistant(name, value)
        if assistant is not None:
            assistants.append(assistant)
    if reader.problems:
        raise AssistantsFileError([f"{source}: {problem}" for problem in reader.problems])
    return tuple(assistants)


def unset_variables(assistants: Sequence[FileAssistant], environ: Mapping[str, str]) -> list[str]:
    """A line for each `${NAME}` whose variable `environ` lacks: the worker's start-up check."""
    problems = []
    for assistant in assistants:
        for server in assistant.mcp_servers:
            for where, template in server.templates():
                for name in variables_in(template):
                    if name not in environ:
                        problems.append(f"{where}: the variable {name} is not set in the worker's environment")
    return problems


def variables_in(template: str) -> list[str]:
    return _VARIABLE.findall(template)


def expand(template: str, environ: Mapping[str, str]) -> str:
    """`template` with each `${NAME}` replaced by the variable's value; `MissingVariable` if one is unset."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise MissingVariable(name)
        return environ[name]

    return _VARIABLE.sub(value, template)


def _key(base: str, key: str) -> str:
    """`base.key`, quoting a key that TOML would quote (`tools."proxmox.list_vms"`)."""
    shown = key if _BARE_KEY.fullmatch(key) else '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{base}.{shown}" if base else shown


def _template_problem(value: str) -> str | None:
    # Every `${` must open a well-formed variable: a typo would otherwise reach the server as text.
    if value.count("${") != len(_VARIABLE.findall(value)):
        return "has a '${' that is not a variable; write ${NAME} (letters, digits and '_')"
    return None


class _Reader:
    """Reads the file's tables, collecting every mistake instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def table(self, value: object, where: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(where, "must be a table")
            return None
        return value

    def unknown_keys(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                self.problem(_key(where, key), "unknown key")

    def text(self, table: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.problem(_key(where, key), "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(_key(where, key), "must be a non-empty string")
            return None
        return value

    def assistant(self, name: str, value: object) -> FileAssistant | None:
        where = _key("assistants", name)
        table = self.table(value, where)
        ok = True
        if name in ASSISTANTS:
            self.problem(where, "is a built-in assistant; the file cannot redefine it")
            ok = False
        elif not _ASSISTANT_NAME.fullmatch(name):
            self.problem(
                where, "a name is letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit"
            )
            ok = False
        if table is None:
            return None
        self.unknown_keys(table, _ASSISTANT_KEYS, where)
        count = len(self.problems)
        description = self.text(table, "description", where, required=True)
        instructions = self.text(table, "instructions", where, required=True)
        engine = self.engine(table, where)
        model = self.model(table.get("model"), f"{where}.model")
        users = self.users(table.get("users"), f"{where}.users")
        raw_servers = table.get("mcp_servers", [])
        servers = self.servers(raw_servers, f"{where}.mcp_servers")
        # Every server the file names, even one with mistakes of its own: those are reported once, there.
        declared = {
            item["name"]
            for item in (raw_servers if isinstance(raw_servers, list) else [])
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        }
        rules = self.rules(table.get("tools", {}), f"{where}.tools", declared)
        if not ok or len(self.problems) > count or description is None or instructions is None or engine is None:
            return None
        return FileAssistant(
            name=name,
            description=description,
            instructions=instructions,
            engine=engine,
            model=model,
            users=users,
            mcp_servers=tuple(servers),
            tools=rules,
        )

    def engine(self, table: Mapping[str, Any], where: str) -> Engine | None:
        value = table.get("engine")
        if value is None:
            self.problem(f"{where}.engine", "is required: 'pydantic-ai' or 'openai-agents'")
            return None
        if value not in ENGINES:
            self.problem(f"{where}.engine", "must be 'pydantic-ai' or 'openai-agents'")
            return None
        return cast(Engine, value)

    def model(self, value: object, where: str) -> ModelChoice | None:
        if value is None:
            return None
        if value == "demo":
            return ModelChoice(provider="demo", name=None)
        provider, _, name = value.partition(":") if isinstance(value, str) else ("", "", "")
        if provider not in _PROVIDERS or provider == "demo" or not name.strip():
            self.problem(
                where,
                "must be 'demo' or 'provider:model' with provider openai, anthropic or ollama (e.g. 'ollama:qwen3:8b')",
            )
            return None
        return ModelChoice(provider=cast(LLMProvider, provider), name=name)

    def users(self, value: object, where: str) -> frozenset[str] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(user, str) and user.strip() for user in value):
            self.problem(where, "must be a list of user ids")
            return None
        if not value:
            self.problem(where, "names nobody; leave it out to open the assistant to everyone")
            return None
        return frozenset(value)

    def servers(self, value: object, where: str) -> list[McpServerConfig]:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.problem(where, "must be a list of tables ([[...mcp_servers]])")
            return []
        servers: list[McpServerConfig] = []
        names: set[str] = set()
        for index, item in enumerate(value):
            server = self.server(item, f"{where}[{index}]")
            if server is None:
                continue
            if server.name in names:
                self.problem(f"{where}[{index}].name", f"another server of this assistant is named '{server.name}'")
                continue
            names.add(server.name)
            servers.append(server)
        return servers

    def server(self, table: dict[str, Any], where: str) -> McpServerConfig | None:
        self.unknown_keys(table, _SERVER_KEYS, where)
        count = len(self.problems)
        name = self.text(table, "name", where, required=True)
        if name is not None and not _SERVER_NAME.fullmatch(name):
            self.problem(
                f"{where}.name", "must be letters, digits, '_' and '-' (at most 32), starting with a letter or digit"
            )
        timeout_s = table.get("timeout_s")
        if timeout_s is not None and (
            isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0
        ):
            self.problem(f"{where}.timeout_s", "must be a number of seconds greater than 0")
        stdio, http = "command" in table, "url" in table
        if stdio == http:
            self.problem(
                where,
                "has both command and url; a server is one or the other"
                if stdio
                else "needs command (a stdio server) or url (a streamable HTTP server)",
            )
            return None
        for key in _HTTP_KEYS if stdio else _STDIO_KEYS:
            if key in table:
                other = "an HTTP server (one with url)" if stdio else "a stdio server (one with command)"
                self.problem(f"{where}.{key}", f"is for {other}")
        server = self.stdio_server(table, where) if stdio else self.http_server(table, where)
        if server is None or name is None or len(self.problems) > count:
            return None
        return server

    def stdio_server(self, table: dict[str, Any], where: str) -> StdioServer | None:
        command = self.text(table, "command", where, required=True)
        args = table.get("args", [])
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            self.problem(f"{where}.args", "must be a list of strings")
            args = []
        for index, arg in enumerate(args):
            self.check_template(arg, f"{where}.args[{index}]")
        env = self.strings(table.get("env", {}), f"{where}.env", key_pattern=_ENV_NAME)
        cwd = self.text(table, "cwd", where, required=False)
        if command is None:
            return None
        return StdioServer(
            name=str(table.get("name")),
            command=command,
            args=tuple(args),
            env=env,
            cwd=cwd,
            timeout_s=_seconds(table.get("timeout_s")),
            where=where,
        )

    def http_server(self, table: dict[str, Any], where: str) -> HttpServer | None:
        url = self.text(table, "url", where, required=True)
        if url is not None and not url.startswith(("http://", "https://")):
            self.problem(f"{where}.url", "must be an http:// or https:// URL")
        elif url is not None and "${" in url:
            self.problem(f"{where}.url", "variables (${NAME}) are expanded only in env, headers and args")
        headers = self.strings(table.get("headers", {}), f"{where}.headers", key_pattern=None)
        if url is None:
            return None
        return HttpServer(
            name=str(table.get("name")),
            url=url,
            headers=headers,
            timeout_s=_seconds(table.get("timeout_s")),
            where=where,
        )

    def strings(self, value: object, where: str, *, key_pattern: re.Pattern[str] | None) -> dict[str, str]:
        table = self.table(value, where)
        if table is None:
            return {}
        strings: dict[str, str] = {}
        for key, item in table.items():
            if not isinstance(item, str):
                self.problem(_key(where, key), "must be a string")
            elif key_pattern is not None and not key_pattern.fullmatch(key):
                self.problem(_key(where, key), "is not a variable name (letters, digits and '_')")
            else:
                self.check_template(item, _key(where, key))
                strings[key] = item
        return strings

    def check_template(self, value: str, where: str) -> None:
        problem = _template_problem(value)
        if problem is not None:
            self.problem(where, problem)

    def rules(self, value: object, where: str, servers: set[str]) -> ToolRules:
        table = self.table(value, where)
        if table is None:
            return ToolRules()
        default: ToolPolicy = DEFAULT_TOOL_POLICY
        per_tool: dict[str, ToolPolicy] = {}
        for key, policy in table.items():
            place = _key(where, key)
            if policy not in TOOL_POLICIES:
                self.problem(place, "must be 'allow', 'approve' or 'deny'")
                continue
            if key == "default":
                default = policy
                continue
            server, dot, tool = key.partition(".")
            if not dot or not server or not tool:
                self.problem(place, "must be 'default' or name a tool as \"server.tool\"")
            elif server not in servers:
                self.problem(place, f"names no MCP server of this assistant ('{server}')")
            else:
                per_tool[key] = policy
        return ToolRules(default=default, per_tool=per_tool)


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
