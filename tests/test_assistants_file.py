"""Assistants from a file (issue 11, section 1), against real deployments.

The file defines three assistants beside the built-in ones:

- `helper` (PydanticAI) with two MCP servers: `box`, the stdio test server (`tests/mcp_test_server.py`)
  the worker starts, and `web`, the same server over streamable HTTP, started here and guarded by a
  bearer token that reaches the worker only as `${SB_TEST_WEB_TOKEN}`;
- `agent-helper` (OpenAI Agents SDK, its own model name) with a `box` of its own;
- `bob-only`, open to bob alone.

The fake LLM calls a tool when told to (`[[tool:NAME {args}]]`, NAME as the model knows it:
`server_tool`) and answers `tool said: <result>` once the result is in, so each reply shows what the
tool returned; its recorded requests show which tools the model was offered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from sqlalchemy import text

from api.app import create_app
from domain.assistant_file import AssistantsFileError, parse_assistants
from domain.settings import Settings
from domain.tool_policy import ToolRules, decide_tool_policy
from tests.deployment import ROOT, Deployment, running_deployment
from tests.fake_llm import FakeLLM
from tests.test_runs_api import sse_events

SECRET = "s3cret-" + uuid.uuid4().hex
WEB_TOKEN = "web-token-" + uuid.uuid4().hex
BOX_TIMEOUT_S = 3


def marker() -> str:
    return "m" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="switchboard-assistants-") as name:
        yield Path(name)


class WebServer:
    """The test server over streamable HTTP, as a process of its own that a test may restart."""

    def __init__(self, log: Path) -> None:
        self._env = {**os.environ, "MCP_TEST_TOKEN": WEB_TOKEN, "MCP_TEST_LOG": str(log)}
        self._process: subprocess.Popen[str] | None = None
        self.url = self._start(port=0)

    def _start(self, *, port: int) -> str:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_test_server", "--http", "--port", str(port)],
            cwd=ROOT,
            env=self._env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        assert "listening on" in line, line
        return line.rsplit(" ", 1)[1].strip()

    def restart(self) -> None:
        """A new process on the same port: it knows none of the sessions the old one had."""
        self.stop()
        self._start(port=int(self.url.rsplit(":", 1)[1].split("/")[0]))

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            assert self._process.stdout is not None
            self._process.stdout.close()
            self._process = None


@pytest.fixture(scope="module")
def web_server(workdir: Path) -> Iterator[WebServer]:
    server = WebServer(workdir / "web.log")
    try:
        yield server
    finally:
        server.stop()


def assistants_toml(*, web_url: str) -> str:
    python = json.dumps(sys.executable)
    box = f"""
        command = {python}
        args = ["-m", "tests.mcp_test_server"]
        env = {{ MCP_TEST_LOG = "${{SB_TEST_BOX_LOG}}", MCP_TEST_SECRET = "${{SB_TEST_SECRET}}" }}
        timeout_s = {BOX_TIMEOUT_S}
    """
    return textwrap.dedent(
        f"""
        [assistants.helper]
        description = "Test helper (PydanticAI)"
        instructions = "You help with the tests."
        engine = "pydantic-ai"

        [[assistants.helper.mcp_servers]]
        name = "box"
        {box}

        [[assistants.helper.mcp_servers]]
        name = "web"
        url = "{web_url}"
        headers = {{ Authorization = "Bearer ${{SB_TEST_WEB_TOKEN}}" }}

        [assistants.helper.tools]
        "box.crash" = "allow"
        "box.grow" = "allow"
        "web.append_line" = "allow"
        "web.lookup" = "deny"

        [assistants.agent-helper]
        description = "Test helper (OpenAI Agents SDK)"
        instructions = "You help with the tests, too."
        engine = "openai-agents"
        model = "openai:other-fake-model"

        [[assistants.agent-helper.mcp_servers]]
        name = "box"
        {box}

        [assistants.agent-helper.tools]
        default = "approve"
        "box.crash" = "deny"

        [assistants.bob-only]
        description = "Bob's own"
        instructions = "You are Bob's."
        engine = "pydantic-ai"
        users = ["bob"]
        """
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def deployed(
    postgres_url: str, redis_url: str, fake_llm: FakeLLM, workdir: Path, web_server: WebServer
) -> AsyncIterator[Deployment]:
    path = workdir / "assistants.toml"
    path.write_text(assistants_toml(web_url=web_server.url))
    env = {
        "SWITCHBOARD_ASSISTANTS_FILE": str(path),
        "SB_TEST_BOX_LOG": str(workdir / "box.log"),
        "SB_TEST_SECRET": SECRET,
        "SB_TEST_WEB_TOKEN": WEB_TOKEN,
    }
    async with running_deployment(
        database=postgres_url, redis_url=redis_url, llm_base_url=fake_llm.base_url, env=env
    ) as running:
        yield running


async def ask(running: Deployment, model: str, content: str, *, user: str = "alice") -> tuple[str, str]:
    """One non-streaming turn: (the answer, the run's id)."""
    async with running.http(user) as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}]}
        )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"], response.headers["x-run-id"]


async def run_events(running: Deployment, run_id: str) -> list[dict[str, Any]]:
    async with running.http() as http:
        response = await http.get(f"/v1/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    return [event["data"] for event in sse_events(response.content)]


def requests_with(fake_llm: FakeLLM, mark: str) -> list[dict[str, Any]]:
    """The fake LLM's requests whose conversation carries `mark`."""
    return [body for body in fake_llm.requests if mark in json.dumps(body["messages"])]


def offered(body: dict[str, Any]) -> set[str]:
    return {tool["function"]["name"] for tool in body.get("tools") or ()}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ----------------------------------------------------------------------------------------- the file


def write(directory: Path, content: str) -> Path:
    path = directory / f"{uuid.uuid4().hex[:8]}.toml"
    path.write_text(textwrap.dedent(content))
    return path


def switchboard(command: str, file: Path | str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("SWITCHBOARD_", "SB_"))}
    environment.update(
        SWITCHBOARD_API_KEYS="key=alice",
        SWITCHBOARD_ASSISTANTS_FILE=str(file),
        SWITCHBOARD_REDIS_URL="redis://127.0.0.1:1/0",
    )
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "switchboard", command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_readme_example_is_a_valid_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Assistants from a file") :]
    example = section[section.index("```toml\n") + len("```toml\n") : section.index("```\n\n")]
    [homelab] = parse_assistants(tomllib.loads(example), source="README.md")
    assert [server.name for server in homelab.mcp_servers] == ["proxmox", "hass"]
    assert homelab.users == frozenset({"alice"})


def test_the_policy_of_a_tool() -> None:
    rules = ToolRules(per_tool={"nas.reboot": "deny", "nas.df": "deny", "nas.ls": "allow"})
    # The file's own line decides; then a read-only tool is allowed; then the default, approve unless set.
    assert decide_tool_policy(rules=rules, server="nas", tool="df", read_only_hint=True) == "deny"
    assert decide_tool_policy(rules=rules, server="nas", tool="ls", read_only_hint=False) == "allow"
    assert decide_tool_policy(rules=rules, server="nas", tool="stat", read_only_hint=True) == "allow"
    assert decide_tool_policy(rules=rules, server="nas", tool="format", read_only_hint=None) == "approve"
    assert decide_tool_policy(rules=rules, server="other", tool="reboot", read_only_hint=False) == "approve"
    strict = ToolRules(default="deny")
    assert decide_tool_policy(rules=strict, server="nas", tool="format", read_only_hint=False) == "deny"
    assert decide_tool_policy(rules=strict, server="nas", tool="stat", read_only_hint=True) == "allow"


def test_every_mistake_in_the_file_is_one_line_and_the_api_does_not_start(workdir: Path) -> None:
    path = write(
        workdir,
        """
        [assistants.homelab]
        description = "Runs my homelab"
        instructions = "You manage the homelab."
        engine = "langchain"
        model = "mistral:large"
        users = []

        [[assistants.homelab.mcp_servers]]
        name = "proxmox"
        command = "python"
        url = "http://127.0.0.1:9/mcp"

        [[assistants.homelab.mcp_servers]]
        name = "hass"
        url = "http://127.0.0.1:9/mcp"
        headers = { Authorization = "Bearer ${TOKEN" }
        timeout_s = 0

        [assistants.homelab.tools]
        default = "sometimes"
        "nas.reboot" = "allow"

        [assistants.todo]
        description = "Mine"
        instructions = "Mine"
        engine = "pydantic-ai"
        """,
    )
    result = switchboard("api", path)
    assert result.returncode == 2, result.stderr
    prefix = f"switchboard: configuration error: {path}: "
    assert result.stderr.splitlines() == [
        prefix + "assistants.homelab.engine: must be 'pydantic-ai' or 'openai-agents'",
        prefix + "assistants.homelab.model: must be 'demo' or 'provider:model' with provider openai, anthropic or "
        "ollama (e.g. 'ollama:qwen3:8b')",
        prefix + "assistants.homelab.users: names nobody; leave it out to open the assistant to everyone",
        prefix + "assistants.homelab.mcp_servers[0]: has both command and url; a server is one or the other",
        prefix + "assistants.homelab.mcp_servers[1].timeout_s: must be a number of seconds greater than 0",
        prefix + "assistants.homelab.mcp_servers[1].headers.Authorization: has a '${' that is not a variable; "
        "write ${NAME} (letters, digits and '_')",
        prefix + "assistants.homelab.tools.default: must be 'allow', 'approve' or 'deny'",
        prefix + "assistants.homelab.tools.\"nas.reboot\": names no MCP server of this assistant ('nas')",
        prefix + "assistants.todo: is a built-in assistant; the file cannot redefine it",
    ]


def test_a_file_that_is_missing_or_not_toml_is_one_line(workdir: Path) -> None:
    missing = switchboard("api", workdir / "nowhere.toml")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        "switchboard: configuration error: SWITCHBOARD_ASSISTANTS_FILE: cannot read "
        f"'{workdir / 'nowhere.toml'}': No such file or directory"
    ]
    broken = write(workdir, "[assistants.x\n")
    result = switchboard("api", broken)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"switchboard: configuration error: SWITCHBOARD_ASSISTANTS_FILE: '{broken}' is not valid TOML"
    )


def test_a_worker_without_a_variable_the_file_names_does_not_start_but_the_api_needs_none(workdir: Path) -> None:
    path = write(
        workdir,
        """
        [assistants.homelab]
        description = "Runs my homelab"
        instructions = "You manage the homelab."
        engine = "pydantic-ai"

        [[assistants.homelab.mcp_servers]]
        name = "proxmox"
        command = "proxmox-mcp"
        args = ["--token-file", "${SB_TEST_TOKEN_FILE}"]
        env = { PROXMOX_TOKEN = "${SB_TEST_PROXMOX_TOKEN}" }
        """,
    )
    result = switchboard("worker", path, SB_TEST_TOKEN_FILE="/run/token")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"switchboard: configuration error: {path}: assistants.homelab.mcp_servers[0].env.PROXMOX_TOKEN: "
        "the variable SB_TEST_PROXMOX_TOKEN is not set in the worker's environment"
    ]
    # The API reads the same file and never expands a variable: it starts without any of them.
    create_app(Settings(assistants_file=path))
    with pytest.raises(AssistantsFileError):
        create_app(Settings(assistants_file=workdir / "nowhere.toml"))


# ----------------------------------------------------------------------------------- the assistants


async def test_the_file_assistants_are_listed_with_their_description_to_their_users_only(deployed: Deployment) -> None:
    async with deployed.http("alice") as alice, deployed.http("bob") as bob:
        alices = {model["id"]: model for model in (await alice.get("/v1/models")).json()["data"]}
        bobs = {model["id"] for model in (await bob.get("/v1/models")).json()["data"]}
        assert {"assistant", "todo", "helper", "agent-helper"} == set(alices)
        assert alices["helper"]["description"] == "Test helper (PydanticAI)"
        assert alices["agent-helper"]["description"] == "Test helper (OpenAI Agents SDK)"
        assert bobs == {"assistant", "todo", "helper", "agent-helper", "bob-only"}
        assert (await bob.get("/v1/models/bob-only")).json()["description"] == "Bob's own"
        # To anyone else, bob's assistant is exactly as missing as one that does not exist.
        hidden = await alice.get("/v1/models/bob-only")
        unknown = await alice.get("/v1/models/nobody-at-all")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["error"]["code"] == unknown.json()["error"]["code"] == "model_not_found"
        for model in ("bob-only", "nobody-at-all"):
            refused = await alice.post(
                "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
            )
            assert refused.status_code == 404
            assert refused.json()["error"] == {
                "message": f"The model '{model}' does not exist",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
    answer, _ = await ask(deployed, "bob-only", "[[reply:hello bob]]", user="bob")
    assert answer == "hello bob"


async def test_an_allowed_tool_runs_and_its_result_reaches_the_model(deployed: Deployment, fake_llm: FakeLLM) -> None:
    mark = marker()
    answer, run_id = await ask(deployed, "helper", f'[[tool:box_lookup {{"key": "{mark}"}}]]')
    assert answer == f"tool said: found {mark} on test-server"
    first, second = requests_with(fake_llm, mark)
    # Read-only tools are allowed; writes wait for approval (the default) unless the file allows them;
    # denied ones are never offered, read-only or not.
    assert offered(first) == {
        "box_lookup",
        "box_append_line",
        "box_secret_digest",
        "box_slow",
        "box_crash",
        "box_grow",
        "web_append_line",
        "web_secret_digest",
        "web_slow",
        "web_crash",
        "web_grow",
    }
    [tool_message] = [message for message in second["messages"] if message["role"] == "tool"]
    assert tool_message["content"] == f"found {mark} on test-server"
    events = await run_events(deployed, run_id)
    [call] = [event for event in events if event["type"] == "tool.call"]
    [result] = [event for event in events if event["type"] == "tool.result"]
    assert call["tool"] == result["tool"] == "box.lookup"
    assert call["args"] == {"key": mark}
    assert call["call_id"] == result["call_id"] == tool_message["tool_call_id"]
    assert result["result"] == f"found {mark} on test-server" and result["is_error"] is False


async def test_server_side_calls_stream_as_text_never_as_tool_calls(deployed: Deployment) -> None:
    mark = marker()
    stream = await deployed.openai().chat.completions.create(
        model="helper",
        messages=[{"role": "user", "content": f'[[tool:box_lookup {{"key": "{mark}"}}]]'}],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert not [chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.tool_calls]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == f"tool said: found {mark} on test-server"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_a_tool_that_needs_approval_is_offered_but_not_run(
    deployed: Deployment, fake_llm: FakeLLM, workdir: Path
) -> None:
    mark = marker()
    answer, run_id = await ask(deployed, "helper", f'[[tool:box_append_line {{"text": "{mark}"}}]]')
    assert answer == (
        f'I want to run this tool:\n- `box.append_line` with arguments `{{"text": "{mark}"}}`\n\nReply approve or deny.'
    )
    assert mark not in "".join(lines(workdir / "box.log"))
    assert len(requests_with(fake_llm, mark)) == 1
    assert not [event for event in await run_events(deployed, run_id) if event["type"].startswith("tool.")]
    # It waits for a decision (tests/test_approvals.py).
    async with deployed.http() as http:
        assert (await http.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"


async def test_the_http_server_s_tools_work_with_the_header_from_the_worker_s_environment(
    deployed: Deployment, workdir: Path
) -> None:
    mark = marker()
    answer, run_id = await ask(deployed, "helper", f'[[tool:web_append_line {{"text": "{mark}"}}]]')
    assert answer == f"tool said: appended {mark}"
    assert lines(workdir / "web.log").count(mark) == 1
    again, _ = await ask(deployed, "helper", f'[[tool:web_append_line {{"text": "{mark}-2"}}]]')
    assert again == f"tool said: appended {mark}-2"
    assert lines(workdir / "web.log").count(f"{mark}-2") == 1
    events = await run_events(deployed, run_id)
    assert [event["tool"] for event in events if event["type"] == "tool.call"] == ["web.append_line"]


async def test_an_http_server_that_restarted_gets_a_new_session(
    deployed: Deployment, web_server: WebServer, workdir: Path
) -> None:
    await ask(deployed, "helper", f'[[tool:web_append_line {{"text": "{marker()}"}}]]')
    web_server.restart()
    # The new process answers 404 for the old session: the call goes again on a new one, and runs once.
    mark = marker()
    answer, _ = await ask(deployed, "helper", f'[[tool:web_append_line {{"text": "{mark}"}}]]')
    assert answer == f"tool said: appended {mark}"
    assert lines(workdir / "web.log").count(mark) == 1


async def test_a_variable_reaches_the_server_and_nothing_else(deployed: Deployment) -> None:
    mark = marker()
    answer, run_id = await ask(deployed, "helper", f"[[tool:box_secret_digest]] {mark}")
    # The server got the value: it answers with its digest, never the value itself.
    assert answer == "tool said: " + hashlib.sha256(SECRET.encode()).hexdigest()
    events = json.dumps(await run_events(deployed, run_id))
    async with deployed.http() as http:
        models = (await http.get("/v1/models")).text
    assert SECRET not in events and WEB_TOKEN not in events
    assert SECRET not in models and WEB_TOKEN not in models
    for log in ("api", "worker-0"):
        logged = deployed.log_text(log)
        assert logged and SECRET not in logged and WEB_TOKEN not in logged
    stored = await everything_stored(deployed)
    assert mark in stored
    assert SECRET not in stored and WEB_TOKEN not in stored


async def everything_stored(deployed: Deployment) -> str:
    tables = await deployed.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    dump = []
    assert deployed.engine is not None
    async with deployed.engine.connect() as connection:
        for table in tables:
            rows = await connection.execute(text(f'SELECT * FROM "{table["tablename"]}"'))
            dump.extend(repr(tuple(row)) for row in rows)
    return "\n".join(dump)


async def test_a_crashed_stdio_server_is_restarted_and_the_next_run_works(deployed: Deployment) -> None:
    answer, _ = await ask(deployed, "helper", f"[[tool:box_crash]] {marker()}")
    # PydanticAI tells the model of a failed call as {"error": ...}.
    assert answer.startswith(
        'tool said: {"error":"the MCP server \'box\' stopped during the call; it is being restarted'
    )
    mark = marker()
    answer, _ = await ask(deployed, "helper", f'[[tool:box_lookup {{"key": "{mark}"}}]]')
    assert answer == f"tool said: found {mark} on test-server"
    worker_log = deployed.log_text("worker-0")
    assert '"event": "mcp.server_down"' in worker_log and '"restart_in_s": 0.5' in worker_log


async def test_a_tool_call_that_takes_too_long_is_cut_off_and_the_server_goes_on(deployed: Deployment) -> None:
    answer, _ = await ask(deployed, "helper", f'[[tool:box_slow {{"seconds": 30}}]] {marker()}')
    assert answer == f'tool said: {{"error":"the tool did not answer within {BOX_TIMEOUT_S} s and was cancelled"}}'
    mark = marker()
    answer, _ = await ask(deployed, "helper", f'[[tool:box_lookup {{"key": "{mark}"}}]]')
    assert answer == f"tool said: found {mark} on test-server"


async def test_the_tool_list_is_fetched_again_when_the_server_says_it_changed(
    deployed: Deployment, fake_llm: FakeLLM
) -> None:
    name = "fresh_" + uuid.uuid4().hex[:6]
    answer, _ = await ask(deployed, "helper", f'[[tool:box_grow {{"tool_name": "{name}"}}]]')
    assert answer == f"tool said: added {name}"
    mark = marker()
    # The notification travels apart from the call's answer; give it a moment to arrive.
    for _ in range(50):
        answer, _ = await ask(deployed, "helper", f"[[tool:box_{name}]] {mark}")
        if answer == f"tool said: {name} was added":
            break
        await asyncio.sleep(0.1)
    assert answer == f"tool said: {name} was added"
    assert f"box_{name}" in offered(requests_with(fake_llm, mark)[-1])


async def test_the_agents_sdk_engine_runs_allowed_tools_stops_at_approval_and_hides_denied_ones(
    deployed: Deployment, fake_llm: FakeLLM, workdir: Path
) -> None:
    mark = marker()
    answer, run_id = await ask(deployed, "agent-helper", f'[[tool:box_lookup {{"key": "{mark}"}}]]')
    assert answer == f"tool said: found {mark} on test-server"
    first = requests_with(fake_llm, mark)[0]
    assert first["model"] == "other-fake-model"
    assert "box_crash" not in offered(first)
    assert {"box_lookup", "box_append_line", "box_secret_digest"} <= offered(first)
    events = await run_events(deployed, run_id)
    assert [(event["type"], event["tool"]) for event in events if event["type"].startswith("tool.")] == [
        ("tool.call", "box.lookup"),
        ("tool.result", "box.lookup"),
    ]

    mark = marker()
    answer, run_id = await ask(deployed, "agent-helper", f'[[tool:box_append_line {{"text": "{mark}"}}]]')
    assert answer == (
        f'I want to run this tool:\n- `box.append_line` with arguments `{{"text": "{mark}"}}`\n\nReply approve or deny.'
    )
    assert mark not in "".join(lines(workdir / "box.log"))
    assert len(requests_with(fake_llm, mark)) == 1
    assert not [event for event in await run_events(deployed, run_id) if event["type"].startswith("tool.")]
    # It waits for a decision (tests/test_approvals_agents.py).
    async with deployed.http() as http:
        assert (await http.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"


async def test_each_assistant_has_its_own_server_process(deployed: Deployment) -> None:
    # agent-helper's box is another process than helper's: crashing one leaves the other serving.
    await ask(deployed, "helper", f"[[tool:box_crash]] {marker()}")
    mark = marker()
    answer, _ = await ask(deployed, "agent-helper", f'[[tool:box_lookup {{"key": "{mark}"}}]]')
    assert answer == f"tool said: found {mark} on test-server"


async def test_a_stopping_worker_stops_its_servers(deployed: Deployment) -> None:
    # Last in this module: it stops the deployment's worker.
    for assistant in ("helper", "agent-helper"):
        await ask(deployed, assistant, f'[[tool:box_lookup {{"key": "{marker()}"}}]]')
    [worker] = deployed.live_workers()
    servers = [
        child
        for child in psutil.Process(worker.pid).children(recursive=True)
        if "mcp_test_server" in " ".join(child.cmdline())
    ]
    assert len(servers) == 2  # helper's box and agent-helper's
    worker.send_signal(signal.SIGTERM)
    await asyncio.to_thread(worker.wait, 30)
    assert worker.returncode == 0
    _, alive = await asyncio.to_thread(psutil.wait_procs, servers, 5)
    assert not alive
    assert deployed.worker_log(worker).count('"event": "mcp.server_stopped"') >= 2
