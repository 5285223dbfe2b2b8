"""A real Switchboard deployment for tests: `switchboard api` and `switchboard worker` as processes.

Each deployment gets its own database (a fresh PostgreSQL database or SQLite file, migrated) and its
own Redis database number, so deployments never share queues or channels. The model is the fake
OpenAI-compatible server, reached over a real socket by the workers' real client code.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import openai
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from switchboard.migrate import upgrade
from tests._services import free_port

ROOT = Path(__file__).resolve().parent.parent
USERS = {"alice": "key-alice", "bob": "key-bob", "carol": "key-carol"}
JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
# Redis database numbers in use by live deployments; 0 is left to whoever else uses the server.
_redis_dbs_in_use: set[int] = set()


def _claim_redis_db() -> int:
    free = next((number for number in range(1, 16) if number not in _redis_dbs_in_use), None)
    if free is None:
        raise RuntimeError("more than 15 deployments alive at once: stop some before starting more")
    _redis_dbs_in_use.add(free)
    return free


_database_numbers = itertools.count(1)


class Deployment:
    def __init__(
        self,
        *,
        database: str,
        redis_url: str,
        llm_base_url: str,
        env: dict[str, str] | None = None,
        workers: int = 1,
        start_worker: bool = True,
        claim_redis_db: bool = True,
    ) -> None:
        self.backend = database
        self._base_redis_url = redis_url.rsplit("/", 1)[0]
        # False: `redis_url` names a Redis of this deployment's own, used as given (no db number claimed).
        self._claims_redis_db = claim_redis_db
        self._redis_db = _claim_redis_db() if claim_redis_db else int(redis_url.rsplit("/", 1)[1] or 0)
        self.redis_url = f"{self._base_redis_url}/{self._redis_db}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._logs = Path(tempfile.mkdtemp(prefix="switchboard-deploy-"))
        self.database_url = ""
        self._pg_admin_url: str | None = database if database.startswith("postgresql") else None
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("SWITCHBOARD_")},
            "SWITCHBOARD_REDIS_URL": self.redis_url,
            "SWITCHBOARD_LLM_PROVIDER": "openai",
            "SWITCHBOARD_LLM_BASE_URL": llm_base_url,
            "SWITCHBOARD_LLM_API_KEY": "fake-llm-key",
            "SWITCHBOARD_LLM_MODEL": "fake-model",
            "SWITCHBOARD_API_KEYS": ",".join(f"{key}={user}" for user, key in USERS.items()),
            "SWITCHBOARD_JWT_SECRET": JWT_SECRET,
            "SWITCHBOARD_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self._worker_count = workers if start_worker else 0
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.engine: AsyncEngine | None = None
        self._openai_http: httpx2.AsyncClient | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Deployment:
        try:
            self.database_url = await self._create_database()
            self.env["SWITCHBOARD_DATABASE_URL"] = self.database_url
            await asyncio.to_thread(upgrade, self.database_url)
            redis = aioredis.from_url(self.redis_url)
            await redis.flushdb()
            await redis.aclose()
            for _ in range(self._worker_count):
                self.start_worker()
            self.api = self._spawn("api", "--port", str(self.port))
            await self._wait_until_ready()
            self.engine = create_async_engine(self.database_url)
        except BaseException:
            # Nobody stops a deployment that never started: leave no process, database or Redis db behind.
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.api]:
            if process is not None:
                try:
                    await asyncio.to_thread(process.wait, 20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait)
        if self._claims_redis_db:
            _redis_dbs_in_use.discard(self._redis_db)
        if self._openai_http is not None:
            await self._openai_http.aclose()
        if self.engine is not None:
            await self.engine.dispose()
        if self._pg_admin_url is not None and self.database_url:
            connection = await asyncpg.connect(_plain(self._pg_admin_url))
            try:
                name = self.database_url.rsplit("/", 1)[1]
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await connection.close()

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = self._spawn("worker")
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [worker for worker in self.workers if worker.poll() is None]

    def worker_log(self, worker: subprocess.Popen[bytes]) -> str:
        """The log of one of this deployment's workers (`worker-N.log`, N its place in `workers`)."""
        return self.log_text(f"worker-{self.workers.index(worker)}")

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        name = f"{args[0]}-{len(self.workers)}" if args[0] == "worker" else args[0]
        # The child gets its own copy of the descriptor: ours is closed as soon as it has started.
        with open(self._logs / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "switchboard", *args], env=self.env, cwd=ROOT, stdout=log, stderr=log
            )

    async def _create_database(self) -> str:
        if self._pg_admin_url is None:
            return f"sqlite+aiosqlite:///{self._logs / 'switchboard.db'}"
        name = f"sb_test_{os.getpid()}_{next(_database_numbers)}"
        connection = await asyncpg.connect(_plain(self._pg_admin_url))
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self._pg_admin_url.rsplit("/", 1)[0] + "/" + name

    async def _wait_until_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        redis = aioredis.from_url(self.redis_url)
        response: httpx2.Response | None = None
        try:
            async with httpx2.AsyncClient() as client:
                while True:
                    self._check_alive()
                    try:
                        response = await client.get(f"{self.base_url}/readyz")
                        if self._worker_count:
                            ready = response.status_code == 200
                        else:
                            # Without workers the API is ready for everything but running turns.
                            ready = response.json().get("missing") == ["workers"]
                        if ready:
                            return
                    except httpx2.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        last = response.text if response is not None else "no answer"
                        raise RuntimeError(f"deployment did not become ready ({last}):\n{self.logs()}")
                    await asyncio.sleep(0.05)
        finally:
            await redis.aclose()

    def _check_alive(self) -> None:
        for process in [self.api, *self.workers]:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"a deployment process exited with {process.returncode}:\n{self.logs()}")

    def logs(self, lines: int = 60) -> str:
        out = []
        for path in sorted(self._logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def log_text(self, name: str) -> str:
        path = self._logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ clients

    def openai(self, user: str = "alice", **kwargs: Any) -> openai.AsyncOpenAI:
        """A client for the OpenAI surface. Tests make these inline and drop them, so none owns a connection:
        they share this deployment's pool, which `stop` closes."""
        if self._openai_http is None:
            self._openai_http = openai.DefaultAsyncHttpxClient()
        return openai.AsyncOpenAI(
            base_url=f"{self.base_url}/v1",
            api_key=USERS[user],
            max_retries=0,
            timeout=60,
            http_client=self._openai_http,
            **kwargs,
        )

    def http(self, user: str | None = "alice") -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {USERS[user]}"} if user else {}
        return httpx2.AsyncClient(base_url=self.base_url, headers=headers, timeout=60)

    async def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        assert self.engine is not None
        async with self.engine.connect() as connection:
            result = await connection.execute(text(sql), params)
            return [dict(row._mapping) for row in result]

    async def messages(self, user: str, conversation_key: str) -> list[dict[str, Any]]:
        return await self.query(
            "SELECT m.role, m.content, m.run_id, m.tool_calls, m.tool_call_id FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.user_id = :user AND c.key = :key ORDER BY m.id",
            user=user,
            key=conversation_key,
        )

    async def wait_for(self, sql: str, *, timeout_s: float = 15.0, **params: Any) -> list[dict[str, Any]]:
        """Poll until the query returns rows."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await self.query(sql, **params)
            if rows or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running_deployment(
    *, database: str, redis_url: str, llm_base_url: str, env: dict[str, str] | None = None
) -> AsyncIterator[Deployment]:
    """A started deployment, stopped on exit: for fixtures with a scope of their own."""
    deployment = Deployment(database=database, redis_url=redis_url, llm_base_url=llm_base_url, env=env)
    try:
        yield await deployment.start()
    finally:
        await deployment.stop()


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)
