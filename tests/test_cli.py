"""The `switchboard` command line: start-up checks, help, `switchboard dev`, and compose.yaml.

Every command runs as a real subprocess in a scratch directory (so no `.env` is picked up), with the
`SWITCHBOARD_*` variables of the test process removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import psutil
import pytest
import yaml

from tests._services import free_port

ROOT = Path(__file__).resolve().parent.parent
EXIT_CONFIG = 2


def clean_env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SWITCHBOARD_")}
    env.update(settings)
    return env


async def run_command(*argv: str, env: dict[str, str], cwd: Path, timeout_s: float = 30) -> tuple[int, str, str]:
    """Run a command to completion: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"`{' '.join(argv)}` was still running after {timeout_s:g} s") from None
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def run_switchboard(*args: str, env: dict[str, str], cwd: Path, timeout_s: float = 30) -> tuple[int, str, str]:
    """Run `python -m switchboard ARGS` to completion: (exit code, stdout, stderr)."""
    return await run_command(sys.executable, "-m", "switchboard", *args, env=env, cwd=cwd, timeout_s=timeout_s)


def base_settings(tmp_path: Path) -> dict[str, str]:
    """Valid settings that reach nothing: any failure must come from the setting under test."""
    return {
        "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SWITCHBOARD_API_KEYS": "some-key=someone",
    }


def assert_one_line_naming(code: int, stdout: str, stderr: str, setting: str) -> None:
    assert code == EXIT_CONFIG, (code, stdout, stderr)
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert setting in lines[0], lines[0]
    assert "usage:" not in stderr
    assert stdout.strip() == ""


# ------------------------------------------------------------------ misconfiguration


MISCONFIGURATIONS = {
    "history-window-not-a-number": ({"SWITCHBOARD_HISTORY_WINDOW": "abc"}, "SWITCHBOARD_HISTORY_WINDOW"),
    "unknown-provider": ({"SWITCHBOARD_LLM_PROVIDER": "nonsense"}, "SWITCHBOARD_LLM_PROVIDER"),
    "api-keys-garbage": ({"SWITCHBOARD_API_KEYS": "garbage"}, "SWITCHBOARD_API_KEYS"),
    "mysql-database": ({"SWITCHBOARD_DATABASE_URL": "mysql://x"}, "SWITCHBOARD_DATABASE_URL"),
}


@pytest.mark.parametrize("case", list(MISCONFIGURATIONS))
async def test_the_api_refuses_to_start_misconfigured(case: str, tmp_path: Path) -> None:
    overrides, setting = MISCONFIGURATIONS[case]
    env = clean_env(**{**base_settings(tmp_path), **overrides})
    code, stdout, stderr = await run_switchboard("api", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert_one_line_naming(code, stdout, stderr, setting)


async def test_the_api_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    settings = base_settings(tmp_path)
    del settings["SWITCHBOARD_API_KEYS"]
    code, stdout, stderr = await run_switchboard(
        "api", "--port", str(free_port()), env=clean_env(**settings), cwd=tmp_path
    )
    assert_one_line_naming(code, stdout, stderr, "SWITCHBOARD_API_KEYS")
    assert "SWITCHBOARD_AUTH=none" in stderr  # the line says how to fix it


@pytest.mark.parametrize(
    ("command", "case"),
    [("worker", "history-window-not-a-number"), ("migrate", "mysql-database"), ("dev", "unknown-provider")],
)
async def test_every_command_refuses_to_start_misconfigured(command: str, case: str, tmp_path: Path) -> None:
    overrides, setting = MISCONFIGURATIONS[case]
    env = clean_env(**{**base_settings(tmp_path), **overrides})
    args = [command, "--port", str(free_port())] if command == "dev" else [command]
    code, stdout, stderr = await run_switchboard(*args, env=env, cwd=tmp_path)
    assert_one_line_naming(code, stdout, stderr, setting)


# ------------------------------------------------------------------ SWITCHBOARD_AUTH=none


async def test_auth_none_starts_with_a_warning(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = clean_env(
        SWITCHBOARD_AUTH="none",
        SWITCHBOARD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth-none.db'}",
        SWITCHBOARD_REDIS_URL=redis_url,
    )
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "switchboard",
            "api",
            "--port",
            str(port),
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                assert process.returncode is None, log_path.read_text()
                with contextlib.suppress(httpx2.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.1)
            # No credentials needed.
            models = await client.get("/v1/models")
            assert models.status_code == 200, models.text
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise

    records = []
    for line in log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    warnings = [record for record in records if isinstance(record, dict) and record.get("level") == "warning"]
    assert any("SWITCHBOARD_AUTH=none" in json.dumps(record) for record in warnings), log_path.read_text()


# ------------------------------------------------------------------ help


async def test_help(tmp_path: Path) -> None:
    env = clean_env()
    script = str(Path(sys.executable).parent / "switchboard")  # the installed console script
    subcommands = ["api", "worker", "migrate", "dev"]
    (code, text, err), *sub_results = await asyncio.gather(
        run_command(script, "--help", env=env, cwd=tmp_path),
        *(run_switchboard(command, "--help", env=env, cwd=tmp_path) for command in subcommands),
    )
    assert code == 0, err
    assert text.startswith("usage: switchboard")
    for command in subcommands:
        assert re.search(rf"^\s+{command}\s+\S", text, re.MULTILINE), f"`{command}` is not listed:\n{text}"
    for command, (code, out, err) in zip(subcommands, sub_results, strict=True):
        assert code == 0, err
        assert out.startswith(f"usage: switchboard {command}"), out
    api_help = sub_results[0][1]
    assert "--host" in api_help and "--port" in api_help


# ------------------------------------------------------------------ switchboard dev


class Dev:
    """`switchboard dev` as a user runs it, with its output read line by line."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int) -> None:
        self.cwd, self.env, self.port = cwd, env, port
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.children: list[psutil.Process] = []

    async def start(self) -> tuple[str, str]:
        """Start it and wait for the banner: (base URL, API key)."""
        with (self.cwd / "dev-stderr.log").open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "switchboard",
                "dev",
                "--port",
                str(self.port),
                env=self.env,
                cwd=self.cwd,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        base_url = api_key = None
        # Generous: on a busy machine each of its Python processes takes ten seconds or more to import.
        deadline = time.monotonic() + 90
        healthy_at: float | None = None
        assert self.process.stdout is not None
        async with httpx2.AsyncClient(timeout=2) as http:
            while not (self.lines and "Press Ctrl-C to stop." in self.lines[-1]):  # the banner's last line
                now = time.monotonic()
                problem = f"\n--- stdout\n{self.output}\n--- stderr\n{self.stderr}"
                assert now < deadline, "no banner within 90 s" + problem
                # The banner is printed once the API is healthy and the worker has reported in (which can
                # take longer to start than the API); some seconds later it must be readable.
                assert healthy_at is None or now - healthy_at < 30, (
                    "the API is up but the banner has not appeared on stdout (printed but not flushed?)" + problem
                )
                try:
                    raw = await asyncio.wait_for(self.process.stdout.readline(), 0.5)
                except TimeoutError:
                    if healthy_at is None:
                        with contextlib.suppress(httpx2.TransportError):
                            if (await http.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                                healthy_at = time.monotonic()
                    continue
                assert raw, "`switchboard dev` ended early" + problem
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if match := re.search(r"base URL (\S+)", line):
                    base_url = match.group(1)
                if match := re.search(r"API key: (\S+)", line):
                    api_key = match.group(1)
        assert base_url is not None and api_key is not None, self.output
        self.children = psutil.Process(self.process.pid).children(recursive=True)
        return base_url, api_key

    async def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the dev process (its children run in sessions of their own)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        await asyncio.wait_for(self.process.wait(), 60)
        assert self.process.stdout is not None
        rest = await self.process.stdout.read()
        self.lines += rest.decode().splitlines()
        assert self.process.returncode is not None
        return self.process.returncode

    async def kill_everything(self) -> None:
        """After a failure: stop it and whatever it started (its children are not in its process group)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(psutil.Error):
                self.children = psutil.Process(self.process.pid).children(recursive=True) or self.children
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for child in self.children:
            with contextlib.suppress(psutil.Error):
                child.kill()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        path = self.cwd / "dev-stderr.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@contextlib.asynccontextmanager
async def dev_session(cwd: Path, env: dict[str, str], port: int) -> AsyncIterator[Dev]:
    dev = Dev(cwd, env, port)
    try:
        yield dev
    finally:
        await dev.kill_everything()


async def test_dev_runs_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    # Read through a pipe, as `switchboard dev | tee` or a log collector would: the banner must still
    # appear when it is printed, not when the process exits.
    env = clean_env()
    env.pop("PYTHONUNBUFFERED", None)

    async with dev_session(tmp_path, env, port) as dev:
        base_url, api_key = await dev.start()
        assert base_url == f"http://127.0.0.1:{port}/v1"
        # Without SWITCHBOARD_REDIS_URL, a Redis of its own, whatever answers on 6379.
        [redis_line] = [line for line in dev.lines if line.startswith("Redis: ")]
        assert "a private one on port" in redis_line and "port 6379" not in redis_line, redis_line
        names = [" ".join(child.cmdline()) for child in dev.children]
        assert any("redis-server" in name for name in names), names

        async with openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30) as client:
            reply = await client.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "hello from the dev test"}]
            )
        assert "hello from the dev test" in (reply.choices[0].message.content or "")
        async with openai.AsyncOpenAI(base_url=base_url, api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError):
                await wrong.models.list()

        key_file = tmp_path / "var" / "dev-api-key"
        assert key_file.read_text().strip() == api_key
        assert key_file.stat().st_mode & 0o077 == 0, "the key file must be private"
        assert (tmp_path / "var" / "switchboard.db").exists()

        assert await dev.interrupt() == 0, f"{dev.output}\n{dev.stderr}"
        _, alive = psutil.wait_procs(dev.children, timeout=5)
        assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
        assert "Switchboard stopped." in dev.output

    # The next start keeps the same key.
    async with dev_session(tmp_path, env, port) as dev:
        _, again = await dev.start()
        assert again == api_key
        async with openai.AsyncOpenAI(base_url=base_url, api_key=again, max_retries=0, timeout=30) as client:
            reply = await client.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "hello again"}]
            )
        assert "hello again" in (reply.choices[0].message.content or "")
        assert await dev.interrupt() == 0, f"{dev.output}\n{dev.stderr}"
        _, alive = psutil.wait_procs(dev.children, timeout=5)
        assert alive == [], f"left running: {[p.cmdline() for p in alive]}"


# ------------------------------------------------------------------ compose.yaml and the Dockerfile


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def dockerfile_cmd() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    [cmd] = [line for line in lines if line.startswith("CMD ")]
    parsed = json.loads(cmd.removeprefix("CMD "))
    assert isinstance(parsed, list)
    return parsed


# What compose.yaml and the image are made of is checked, as files, in tests/test_compose.py.


async def test_compose_and_dockerfile_commands_are_ones_the_cli_accepts(tmp_path: Path) -> None:
    """Each command parses, and gets as far as reading settings (a bad one here, so nothing starts)."""
    services = compose()["services"]
    commands = [services[name]["command"] for name in ("migrate", "api", "worker")] + [dockerfile_cmd()]
    env = clean_env(**{**base_settings(tmp_path), "SWITCHBOARD_DATABASE_URL": "mysql://x"})
    for command in commands:
        assert command[0] == "switchboard"
    results = await asyncio.gather(*(run_switchboard(*command[1:], env=env, cwd=tmp_path) for command in commands))
    for command, (code, stdout, stderr) in zip(commands, results, strict=True):
        assert "usage:" not in stderr, f"{command} is not a valid command line:\n{stderr}"
        assert_one_line_naming(code, stdout, stderr, "SWITCHBOARD_DATABASE_URL")
