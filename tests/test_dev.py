"""The first five minutes: `switchboard dev`, `switchboard migrate` and the worker's start, as real processes.

Every process a test starts carries a marker in its environment, which its own children inherit, and
runs in the test's own directory, so "nothing it started survives" is checked by looking for either
among all processes, whatever was started and whenever the signal came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
import redis.asyncio

from domain import keys
from switchboard.migrate import upgrade
from tests._services import find_redis_server, free_port

ROOT = Path(__file__).resolve().parent.parent
MARKER = "SWITCHBOARD_TEST_PROCESS_MARKER"
# Generous: on a busy machine a Python process of this project takes ten seconds or more to import.
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0


def clean_env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SWITCHBOARD_")}
    env.update(settings)
    return env


def processes_of(marker: str, cwd: Path) -> list[psutil.Process]:
    """Processes that carry the marker in their environment, or run in the test's directory: redis-server
    writes its title over its environment, but it works in the directory it was given."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            ours = process.environ().get(MARKER) == marker or Path(process.cwd()).is_relative_to(cwd)
            if ours and process.pid != os.getpid() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _as_from_a_terminal() -> None:
    """A command typed at a terminal starts with Python's usual SIGINT disposition. A test suite run as a
    background job (`... &`, as CI harnesses do) has SIGINT ignored, and a child would inherit that
    until its own code runs: a Ctrl-C in the first moments would be lost for a reason no user has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Marked:
    """A command started as a user would start it from a terminal: its own process group, stdout and
    stderr into one stream, and a marker in its environment."""

    def __init__(self, cwd: Path, argv: list[str], env: dict[str, str]) -> None:
        self.marker = uuid.uuid4().hex
        self.cwd, self.argv = cwd, argv
        self.env = {**env, MARKER: self.marker}
        self.log = cwd / f"output-{self.marker[:8]}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Marked:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_as_from_a_terminal,
            )
        return self

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def survivors(self) -> list[psutil.Process]:
        return processes_of(self.marker, self.cwd)

    async def wait_until(self, what: str, condition: Callable[[], bool], timeout_s: float = START_TIMEOUT_S) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.process.returncode is None, f"it ended before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"not {what} within {timeout_s:g} s:\n{self.output}"
            await asyncio.sleep(0.1)

    async def signal_and_wait(self, signum: int) -> int:
        """The signal to its process group, as a terminal sends Ctrl-C or a hang-up; then its exit code."""
        assert self.process is not None
        os.killpg(self.process.pid, signum)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"still running {STOP_TIMEOUT_S:g} s after {signum!r}:\n{self.output}") from None
        assert self.process.returncode is not None
        return self.process.returncode

    async def wait(self, timeout_s: float = START_TIMEOUT_S) -> int:
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"still running after {timeout_s:g} s:\n{self.output}") from None

    def kill_everything(self) -> None:
        for process in self.survivors():
            with contextlib.suppress(psutil.Error):
                process.kill()


@contextlib.asynccontextmanager
async def started(cwd: Path, argv: list[str], env: dict[str, str]) -> AsyncIterator[Marked]:
    command = Marked(cwd, argv, env)
    try:
        yield await command.start()
    finally:
        command.kill_everything()
        if command.process is not None and command.process.returncode is None:
            await command.process.wait()


def dev_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "switchboard", "dev", "--port", str(port)]


def assert_all_stopped(command: Marked, port: int) -> None:
    _, alive = psutil.wait_procs(command.survivors(), timeout=10)
    assert alive == [], f"left running: {[p.cmdline() for p in alive]}\n{command.output}"
    assert port_is_free(port), f"port {port} is still taken"


# ------------------------------------------------------------------ switchboard dev: stopping


def started_children(count: int, command: Marked) -> Callable[[], bool]:
    """True once `count` processes besides `switchboard dev` itself carry its marker."""
    return lambda: len(command.survivors()) > count


# When each signal comes: seconds after the start (often still importing), or once so many of its
# children (Redis, the worker, the API) run, before the banner.
MOMENTS: dict[str, tuple[signal.Signals, float | int]] = {
    "sigint-at-1s": (signal.SIGINT, 1.0),
    "sigint-at-3s": (signal.SIGINT, 3.0),
    "sigterm-once-redis-runs": (signal.SIGTERM, 1),
    "sighup-once-all-three-run": (signal.SIGHUP, 3),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
async def test_a_stop_signal_while_starting_stops_everything_quietly(moment: str, tmp_path: Path) -> None:
    signum, when = MOMENTS[moment]
    port = free_port()
    async with started(tmp_path, dev_argv(port), clean_env()) as dev:
        if isinstance(when, float):
            await asyncio.sleep(when)
        else:
            await dev.wait_until(f"{when} children run", started_children(when, dev))
        code = await dev.signal_and_wait(signum)
        assert "Traceback" not in dev.output, dev.output
        assert code in (0, 128 + signum), f"exit {code}:\n{dev.output}"
        assert_all_stopped(dev, port)


async def test_a_second_dev_says_the_port_is_taken_and_a_hangup_stops_the_first(tmp_path: Path, redis_url: str) -> None:
    """Also: SWITCHBOARD_REDIS_URL set means that Redis, named in the banner, and none started."""
    port = free_port()
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    env = clean_env(SWITCHBOARD_REDIS_URL=redis_url)
    async with started(first_dir, dev_argv(port), env) as first:
        await first.wait_until("running", lambda: "Press Ctrl-C to stop." in first.output)
        lines = first.output.splitlines()
        # The banner is one block: no log line of the API or the worker in the middle of it.
        top = next(i for i, line in enumerate(lines) if line.startswith("Switchboard is running"))
        bottom = next(i for i, line in enumerate(lines) if "Press Ctrl-C to stop." in line)
        banner = lines[top : bottom + 1]
        assert [line.split(":")[0] for line in banner] == [
            "Switchboard is running",
            "Todo web app",
            "API key",
            "Redis",
            "Database",
            "Model provider",
        ], "\n".join(lines)
        assert f"Redis: {redis_url} (SWITCHBOARD_REDIS_URL)" in banner
        names = [" ".join(process.cmdline()) for process in first.survivors()]
        assert not any("redis-server" in name for name in names), names

        async with started(second_dir, dev_argv(port), env) as second:
            code = await second.wait()
            assert code != 0
            assert f"port {port}" in second.output and "taken" in second.output, second.output
            assert "Switchboard is running" not in second.output
            assert "Traceback" not in second.output
            assert second.survivors() == []
        assert first.process is not None and first.process.returncode is None, "the second one stopped the first"

        code = await first.signal_and_wait(signal.SIGHUP)
        assert code == 0, first.output
        assert "Traceback" not in first.output, first.output
        assert "Switchboard stopped." in first.output
        assert_all_stopped(first, port)


async def test_dev_names_an_unreachable_redis_it_was_given(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with started(tmp_path, dev_argv(free_port()), clean_env(SWITCHBOARD_REDIS_URL=dead)) as dev:
        code = await dev.wait()
    assert code == 1, dev.output
    lines = dev.output.splitlines()
    assert len(lines) == 1, dev.output
    assert "SWITCHBOARD_REDIS_URL" in lines[0] and dead in lines[0]


# ------------------------------------------------------------------ the worker's start


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "switchboard", "worker"]


def warnings(output: str) -> list[dict[str, object]]:
    found = []
    for line in output.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("level") == "warning":
                found.append(record)
    return found


async def migrated_sqlite(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}"
    await asyncio.to_thread(upgrade, url)
    return url


async def test_the_worker_waits_for_redis_naming_it_and_comes_up_when_it_does(tmp_path: Path) -> None:
    port = free_port()
    database_url = await migrated_sqlite(tmp_path)
    env = clean_env(SWITCHBOARD_REDIS_URL=f"redis://127.0.0.1:{port}/0", SWITCHBOARD_DATABASE_URL=database_url)
    async with started(tmp_path, worker_argv(), env) as worker:
        await worker.wait_until("retrying", lambda: len(warnings(worker.output)) >= 2)
        first, second = warnings(worker.output)[:2]
        for record in (first, second):
            assert record["event"] == "worker.redis_unreachable", record
            assert record["setting"] == "SWITCHBOARD_REDIS_URL"
            assert record["address"] == f"127.0.0.1:{port}"
        assert float(str(second["retry_in_s"])) > float(str(first["retry_in_s"])), "no backoff"
        assert "Traceback" not in worker.output

        server = await asyncio.create_subprocess_exec(
            *(find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = redis.asyncio.Redis(port=port)
        try:

            async def reported_in() -> bool:
                with contextlib.suppress(redis.RedisError, OSError):
                    return bool(await client.zcard(keys.WORKERS))
                return False

            deadline = time.monotonic() + 30
            while not await reported_in():
                assert worker.process is not None and worker.process.returncode is None, worker.output
                assert time.monotonic() < deadline, f"no heartbeat 30 s after Redis started:\n{worker.output}"
                await asyncio.sleep(0.2)
            # One line per try, tries further and further apart: a handful, not a flood.
            assert len(warnings(worker.output)) <= 6, worker.output
            code = await worker.signal_and_wait(signal.SIGTERM)
            assert code == 0, worker.output
            assert "Traceback" not in worker.output, worker.output
        finally:
            await client.aclose()
            server.kill()
            await server.wait()


async def test_the_worker_waits_for_the_database_naming_it(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    database_url = f"postgresql+asyncpg://someone:secret@127.0.0.1:{port}/switchboard"
    env = clean_env(SWITCHBOARD_REDIS_URL=redis_url, SWITCHBOARD_DATABASE_URL=database_url)
    async with started(tmp_path, worker_argv(), env) as worker:
        await worker.wait_until("retrying", lambda: len(warnings(worker.output)) >= 2)
        for record in warnings(worker.output):
            assert record["event"] == "worker.database_unreachable", record
            assert record["setting"] == "SWITCHBOARD_DATABASE_URL"
            assert record["address"] == f"postgresql+asyncpg://someone:***@127.0.0.1:{port}/switchboard"
        assert "secret" not in worker.output
        # Ctrl-C while it waits: a quiet stop.
        code = await worker.signal_and_wait(signal.SIGINT)
        assert code == 0, worker.output
        assert "Traceback" not in worker.output, worker.output
        assert worker.survivors() == []


# ------------------------------------------------------------------ switchboard migrate


async def migrate(tmp_path: Path, database_url: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard",
        "migrate",
        cwd=tmp_path,
        env=clean_env(SWITCHBOARD_DATABASE_URL=database_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_migrate_says_one_line_and_names_a_folder_it_makes(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    (code, out, err), (made_code, made_out, made_err) = await asyncio.gather(
        migrate(tmp_path, "sqlite+aiosqlite:///./existing/a.db"),
        migrate(tmp_path, "sqlite+aiosqlite:///./new/folders/b.db"),
    )
    assert (code, err) == (0, ""), err
    assert re.fullmatch(
        r"Upgraded the database at sqlite\+aiosqlite:///\./existing/a\.db from revision \(empty\) to \w+ "
        r"\(\d+ migrations\)\.\n",
        out,
    ), out

    assert (made_code, made_err) == (0, ""), made_err
    assert made_out.splitlines()[0] == "Created the folder new/folders for the SQLite database.", made_out
    assert len(made_out.splitlines()) == 2, made_out
    assert (tmp_path / "new" / "folders" / "b.db").exists()

    code, out, err = await migrate(tmp_path, "sqlite+aiosqlite:///./existing/a.db")
    assert (code, err) == (0, ""), err
    assert re.fullmatch(r"The database at \S+ is up to date \(revision \w+\)\.\n", out), out


async def test_migrate_names_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    code, out, err = await migrate(tmp_path, f"postgresql+asyncpg://someone:secret@127.0.0.1:{port}/switchboard")
    assert code == 1, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "SWITCHBOARD_DATABASE_URL" in lines[0]
    assert f"postgresql+asyncpg://someone:***@127.0.0.1:{port}/switchboard" in lines[0]
    assert "secret" not in err


# ------------------------------------------------------------------ scripts/dev and scripts/test: what they install


FAKE_UV = """#!/bin/sh
echo "uv $*" >> "$(dirname "$0")/../../calls.log"
"""
FAKE_PYTHON = """#!/bin/sh
echo "python $*" >> "$(dirname "$0")/../../calls.log"
"""


def fake_checkout(tmp_path: Path) -> Path:
    """The scripts and lock files beside a venv whose uv and python only say how they were called."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "scripts", checkout / "scripts")
    for name in ("requirements.lock", "requirements-dev.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, checkout / name)
    tools = checkout / ".venv" / "bin"
    tools.mkdir(parents=True)
    for name, text in (("uv", FAKE_UV), ("python", FAKE_PYTHON)):
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    # scripts/test looks for these services, and would install missing ones as root.
    services = tmp_path / "services"
    services.mkdir()
    for name in ("redis-server", "initdb", "chromium"):
        (services / name).write_text("#!/bin/sh\n")
        (services / name).chmod(0o755)
    return checkout


def run_script(checkout: Path, script: str) -> list[str]:
    """The calls the script made to uv and python."""
    log = checkout / "calls.log"
    log.unlink(missing_ok=True)
    env = {**clean_env(), "PATH": f"{checkout.parent / 'services'}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", f"scripts/{script}"], cwd=checkout, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines() if log.exists() else []


def installs(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("uv pip") and "-e ." not in call]


def test_scripts_dev_installs_what_running_needs_and_scripts_test_the_rest(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path)

    calls = run_script(checkout, "dev")
    assert [call.split(" --python")[0] for call in installs(calls)] == ["uv pip install"], calls
    assert "requirements.lock" in installs(calls)[0] and "requirements-dev.lock" not in " ".join(calls)
    assert calls[-1] == "python -m switchboard dev", calls
    assert installs(run_script(checkout, "dev")) == [], "installed again with nothing changed"

    calls = run_script(checkout, "test")
    assert [call.split(" --python")[0] for call in installs(calls)] == ["uv pip sync"], calls
    assert "requirements-dev.lock" in installs(calls)[0]
    assert installs(run_script(checkout, "test")) == []
    # A venv set up for the tests has everything running needs.
    assert installs(run_script(checkout, "dev")) == []
