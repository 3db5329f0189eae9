"""/docs (Swagger UI) and /redoc from files packaged with the server (fastapi-offline's copies), so the
API's reference works with no CDN and no other host: no Google fonts, no validator badge, our favicon."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["install"]

ASSETS = "/static/docs"


REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"  # the one address the ReDoc bundle fetches by itself


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    """ReDoc's bundle with its footer logo pointed at our favicon instead of Redocly's CDN."""
    source = (files("fastapi_offline") / "static" / "redoc.standalone.js").read_bytes()
    return source.replace(REDOC_LOGO.encode(), f"{ASSETS}/favicon.png".encode())


def install(app: FastAPI) -> None:
    # Plain values, not the app: a route that closed over the app would put it in a reference cycle,
    # and an app kept alive by the cycle collector keeps its database pool open.
    title, openapi_url = app.title, app.openapi_url or "/openapi.json"

    @app.get(f"{ASSETS}/redoc.standalone.js", include_in_schema=False)
    def redoc_bundle() -> Response:  # before the mount below, so that this route answers for the file
        return Response(
            _redoc_bundle(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
        )

    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} · API", swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css", swagger_favicon_url=f"{ASSETS}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect", swagger_ui_parameters={"validatorUrl": None},
        )  # fmt: skip

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url, title=f"{title} · API", redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png", with_google_fonts=False,
        )  # fmt: skip
