"""`GET /openapi.json`: an OpenAPI 3.1 document of every HTTP surface, generated from their models."""

from api.openapi.route import routes

__all__ = ["routes"]
