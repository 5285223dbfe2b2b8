"""How database failures read to the rest of the system: a server that refuses us is
`DatabaseUnavailable` (a 503 with Retry-After), whichever way the driver happens to report it."""

from __future__ import annotations

import pytest
from sqlalchemy import make_url, text

from domain.database import create_engine, ping
from domain.errors import DatabaseUnavailable
from tests.test_openai_wire import marker


async def test_a_server_that_refuses_new_connections_reads_as_unavailable(postgres_url: str) -> None:
    # A server shutting down or starting up refuses connections with an SQLSTATE (57P03), as a full
    # one does (53300). The driver reports those as a plain database error, not a lost connection;
    # a role with a connection limit of 0 is the way to get such a refusal (53300) on demand.
    name = f"refused_{marker()}".lower()
    admin = create_engine(postgres_url, pool_size=1)
    refused_url = make_url(postgres_url).set(username=name, password=None)
    refusing = create_engine(refused_url.render_as_string(False), pool_size=1)
    try:
        async with admin.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f'CREATE ROLE "{name}" LOGIN CONNECTION LIMIT 0'))
        with pytest.raises(DatabaseUnavailable):
            await ping(refusing)
    finally:
        await refusing.dispose()
        async with admin.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
        await admin.dispose()
