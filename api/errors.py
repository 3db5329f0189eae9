"""Registry errors → HTTP, in exactly one table; every error leaves as the same JSON shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import ServerState, authenticate_token, client_address
from api.web.render import error_page
from api.web.session import SignInRequired, sign_in_redirect
from registry.domain.errors import WanloraError, out_of_space

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
    "unavailable": 503,
    "out_of_space": 507,
    "too_many_failures": 429,
    "corrupt_artifact": 500,
    "too_large": 413,
    "error": 500,
}


class ErrorBody(BaseModel):
    code: str
    message: str
    hint: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def status_of(exc: WanloraError) -> int:
    """The HTTP status of an error: its own code's, else the nearest base class's (an error type added
    later never turns into a 500)."""
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if code in STATUS:
            return STATUS[code]
    return 500


def error_response(
    status: int, code: str, message: str, hint: str | None = None, *, retry_after: int | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = ErrorResponse(error=ErrorBody(code=code, message=message, hint=hint))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def is_page(request: Request) -> bool:
    """A dashboard page (not the API, not /docs): its errors are pages too."""
    path = request.url.path
    return not path.startswith(("/api/", "/openapi.json", "/docs", "/redoc", "/static/")) and not path.endswith(".json")


def _answer(request: Request, status: int, code: str, message: str, hint: str | None, **kw: int | None) -> Response:
    if is_page(request):
        return error_page(request, status, code, message, hint)
    return error_response(status, code, message, hint, **kw)


def install(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(_: Request, exc: SignInRequired) -> Response:
        if exc.next_path.startswith("/api/") or exc.next_path.endswith(".json"):
            return error_response(401, "unauthenticated", "sign in first", "POST a token to /signin")
        return sign_in_redirect(exc)

    @app.exception_handler(WanloraError)
    async def _registry_error(request: Request, exc: WanloraError) -> Response:
        return _answer(
            request, status_of(exc), exc.code, exc.message, exc.hint, retry_after=getattr(exc, "retry_after", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:  # a bug: same shape, no internals
        full = out_of_space(exc)
        if full is not None:
            return _answer(request, 507, full.code, full.message, full.hint)
        return _answer(request, 500, "error", "internal error", "the server log has the details")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI reads and checks the body before it runs the dependencies, so without this a caller
        # with no or a bad token would learn how its request was wrong before being told who it is not.
        denied = await _unauthenticated(request)
        if denied is not None:
            return denied
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _answer(request, 422, "invalid_input", f"invalid request: {problems}", None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "error")
        return _answer(request, exc.status_code, code, str(exc.detail), None)


PUBLIC_PATHS = ("/api/v1/health",)


async def _unauthenticated(request: Request) -> JSONResponse | None:
    """The 401 a request to the API gets before anything about its body, when its token is missing or bad."""
    if not request.url.path.startswith("/api/") or request.url.path in PUBLIC_PATHS:
        return None
    state: ServerState | None = getattr(request.app.state, "wanlora", None)
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if state is None:
        return None
    try:
        await run_in_threadpool(authenticate_token, state, token, client_address(request))
    except WanloraError as exc:
        return error_response(
            STATUS.get(exc.code, 401), exc.code, exc.message, exc.hint, retry_after=getattr(exc, "retry_after", None)
        )
    return None


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "Invalid input"},
    401: {"model": ErrorResponse, "description": "No, a bad, an expired or a revoked token"},
    403: {"model": ErrorResponse, "description": "The token's role does not allow this"},
    404: {"model": ErrorResponse, "description": "Not found (or not visible to this role)"},
    409: {"model": ErrorResponse, "description": "Conflict with the current state"},
}
