"""The playground: a browser page that places a WebRTC call to an agent (``GET /playground``).

Plain HTML, one script and one style sheet, shipped in the package (``static/``) and served as
they are: no build step, no CDN, no external fonts. The page needs no API key to load; the key is
typed into it and kept in the page's memory only. What it does (see ``static/playground.js``):
``GET /agents`` for the picker, ``POST /calls/create`` or ``/calls/inline`` with
``connectionType: "webrtc"``, the SDP offer to the call's ``offerUrl``, the ``events`` data
channel for the live transcript and the agent's state, and afterwards ``GET /calls/{id}`` and its
recording (fetched with the key into a blob URL).

Routes (added by :func:`gateway.api.create_api`, kept out of the OpenAPI document):

* ``GET /playground``: the page (``text/html``);
* ``GET /playground/static/{name}``: its assets, only the files listed in :data:`ASSETS`.

Every response carries a Content-Security-Policy allowing this origin only (scripts, styles,
``fetch``; media from ``blob:`` for the recording), ``Cache-Control: no-cache`` and
``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

__all__ = ["STATIC", "ASSETS", "CSP", "routes"]

#: The page's files in the package.
STATIC = Path(__file__).with_name("static")

#: Asset name → media type: the only files ``/playground/static/…`` serves.
ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}

#: Same origin only; ``blob:`` media for the recording; no framing, no forms, no plugins.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"}  # fmt: skip


async def page(request: Request) -> FileResponse:
    """``GET /playground``: ``static/index.html``."""
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)


async def asset(request: Request) -> FileResponse:
    """``GET /playground/static/{name}``: one of :data:`ASSETS`.

    Raises:
        HTTPException: 404 for any other name (the API's error envelope).
    """
    name = request.path_params["name"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no playground asset {name!r}")
    return FileResponse(STATIC / name, media_type=media_type, headers=_HEADERS)


def routes() -> list[Route]:
    """The playground's routes (``GET`` and ``HEAD``), outside the OpenAPI document."""
    return [
        Route("/playground", page, methods=["GET"], include_in_schema=False),
        Route("/playground/static/{name}", asset, methods=["GET"], include_in_schema=False),
    ]
