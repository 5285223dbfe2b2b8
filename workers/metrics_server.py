"""A worker's own `/metrics`, on `SWITCHBOARD_WORKER_METRICS_PORT`, for Prometheus to scrape.

prometheus-client's server answers from a thread of its own, so a scrape never waits for the
worker's event loop, however busy its runs keep it, and never slows them down in turn.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from domain.errors import ConfigurationError


@dataclass(frozen=True, kw_only=True)
class MetricsServer:
    _server: WSGIServer
    _thread: threading.Thread

    @classmethod
    def start(cls, registry: CollectorRegistry, *, host: str, port: int) -> MetricsServer:
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigurationError(
                f"SWITCHBOARD_WORKER_METRICS_PORT: cannot listen on {host}:{port} ({exc.strerror or exc})"
            ) from exc
        return cls(_server=server, _thread=thread)

    async def stop(self) -> None:
        # `shutdown` waits for the server's loop to notice, up to half a second: not on the event loop.
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
