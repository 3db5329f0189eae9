"""wanlora's HTTP API (FastAPI): a thin door onto ``registry``. ``create_app`` wires; routes parse, call
one service method and return public models."""

from api.main import create_app

__all__ = ["create_app"]
