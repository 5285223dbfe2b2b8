"""The API's spans: one server span per HTTP request, by OpenTelemetry's own ASGI instrumentation.

Added only when traces are on (`domain/tracing.py`). A span is named by its route's template
(`POST /api/{user_id}/chat`), not the path a client asked for, so names stay few. Probes and metrics
scrapes are not traced; nor are the ASGI messages of a request (a streamed answer sends hundreds).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util.http import ExcludeList
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Match, Mount

from api.metrics import METRICS_PATH

_UNTRACED = ExcludeList([r"/healthz$", r"/readyz$", f"{METRICS_PATH}$"])


def tracing_middleware(provider: TracerProvider) -> Middleware:
    return Middleware(
        OpenTelemetryMiddleware,
        tracer_provider=provider,
        excluded_urls=_UNTRACED,
        default_span_details=span_details,
        exclude_spans=["receive", "send"],
    )


def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, str]]:
    method = scope.get("method", "HTTP")
    route = _route_of(scope)
    if route is None:
        return method, {}
    return f"{method} {route}", {"http.route": route}


def _route_of(scope: dict[str, Any]) -> str | None:
    """The template of the route that answers this request, through mounts, as Starlette's router
    chooses it (the first full match, else the first partial one); None when none does."""
    routes = list(getattr(scope.get("app"), "routes", None) or ())
    prefix = ""
    while routes:
        chosen: tuple[BaseRoute, dict[str, Any]] | None = None
        for route in routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                chosen = (route, child_scope)
                break
            if match is Match.PARTIAL and chosen is None:
                chosen = (route, child_scope)
        if chosen is None:
            return None
        route, child_scope = chosen
        prefix += getattr(route, "path", "")
        if not isinstance(route, Mount):
            return prefix
        scope = {**scope, **child_scope}
        routes = list(route.routes)
    return prefix or None
