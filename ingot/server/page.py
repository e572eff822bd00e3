"""The playground: a static page (ingot/server/playground/) that talks to the server through its public API only.

The page holds no secret and the server keeps no state for it, so it is served without the API key; it asks for
the key itself and sends it as a bearer token on every API call.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

PAGE_DIR = Path(__file__).parent / "playground"
ASSETS_PREFIX = "/playground/"  # the page's scripts and style
PAGE_PATHS = frozenset({"/", "/playground"})
# Everything the page loads comes from this server: no CDN, no inline script, and no key leaves it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
@router.get("/playground")
async def playground() -> FileResponse:
    return FileResponse(
        PAGE_DIR / "index.html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "no-referrer"},
    )


def install_playground(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS_PREFIX.rstrip("/"), StaticFiles(directory=PAGE_DIR), name="playground")
