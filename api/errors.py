"""Registry errors → HTTP, in exactly one table; every error leaves as the same JSON shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from registry.domain.errors import WanloraError

STATUS = {
    "not_found": 404,
    "already_exists": 409,
    "invalid_input": 400,
    "invalid_file": 422,
    "unauthenticated": 401,
    "permission_denied": 403,
    "integrity": 500,
    "conflict": 409,
    "gate_refused": 409,
    "schema_outdated": 503,
    "too_large": 413,
    "error": 500,
}


class ErrorBody(BaseModel):
    code: str
    message: str
    hint: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_response(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = ErrorResponse(error=ErrorBody(code=code, message=message, hint=hint))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(WanloraError)
    async def _registry_error(_: Request, exc: WanloraError) -> JSONResponse:
        return error_response(STATUS.get(exc.code, 500), exc.code, exc.message, exc.hint)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # a bug: same shape, no internals
        return error_response(500, "error", "internal error", "the server log has the details")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_input", f"invalid request: {problems}")


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "Invalid input"},
    401: {"model": ErrorResponse, "description": "No, a bad, an expired or a revoked token"},
    403: {"model": ErrorResponse, "description": "The token's role does not allow this"},
    404: {"model": ErrorResponse, "description": "Not found (or not visible to this role)"},
    409: {"model": ErrorResponse, "description": "Conflict with the current state"},
}
