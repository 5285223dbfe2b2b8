"""Shared fixtures. Service fixtures (redis_url, postgres_url, fake_llm) live in tests/_services.py.

`deployment` is one running Switchboard on PostgreSQL shared by the whole session; tests keep out of
each other's way by using their own conversation ids. `sqlite_deployment` is the same on SQLite.
`deploy` builds a deployment with settings of its own, stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import pytest_asyncio

from tests.fake_llm import FakeLLM

if TYPE_CHECKING:
    # Imported where it is used: it imports tests._services, which pytest must import first, as the
    # plugin named below, to rewrite its asserts.
    from tests.deployment import Deployment

pytest_plugins = ["tests._services"]

DeployFactory = Callable[..., Awaitable["Deployment"]]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def deployment(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    from tests.deployment import Deployment

    running = await Deployment(database=postgres_url, redis_url=redis_url, llm_base_url=fake_llm.base_url).start()
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sqlite_deployment(redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[Deployment]:
    from tests.deployment import Deployment

    running = await Deployment(database="sqlite", redis_url=redis_url, llm_base_url=fake_llm.base_url).start()
    yield running
    await running.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def deploy(postgres_url: str, redis_url: str, fake_llm: FakeLLM) -> AsyncIterator[DeployFactory]:
    from tests.deployment import Deployment

    started: list[Deployment] = []

    async def factory(
        env: dict[str, str] | None = None, *, database: str | None = None, **kwargs: object
    ) -> Deployment:
        deployment = Deployment(
            database=database or postgres_url,
            redis_url=redis_url,
            llm_base_url=kwargs.pop("llm_base_url", fake_llm.base_url),  # type: ignore[arg-type]
            env=env,
            **kwargs,  # type: ignore[arg-type]
        )
        started.append(deployment)
        return await deployment.start()

    yield factory
    for deployment in started:
        await deployment.stop()
