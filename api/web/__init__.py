"""The todo assistant's web page, at `/` with its files under `/static`."""

from api.web.page import routes

__all__ = ["routes"]
