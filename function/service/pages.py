"""The pages a person opens: the prediction page and model card, the API docs, and their assets.

Served by the service itself, every asset from the image (no CDN, no network):
- `/` and `/model/card`: one page (function/service/ui/index.html), its tabs chosen by the path;
- `/docs`: Swagger UI over `/openapi.json`, from the files flask-swagger-ui bundles;
- `/ui/NAME`: the scripts, styles and images those pages load, and nothing else.

A page needs no key; every call it makes to the API does (the key is kept in the tab's
sessionStorage and sent as X-API-Key). Pages get their own CSP, the narrowest that works: this
origin's scripts, styles, images and calls, no inline script or style, no eval. The API's answers
keep `default-src 'none'`. `UI=false` removes these routes.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from flask import Request, Response

from function.core.errors import NotFound

UI_DIR = Path(__file__).with_name("ui")
PAGE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # data: for the SVG icons in Swagger UI's stylesheet; blob: for the report's plots,
        # fetched with the key and shown from memory.
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGES = {"/": "index.html", "/model/card": "index.html", "/docs": "docs.html"}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".json": "application/json",
}
COMPRESS_OVER_BYTES = 1024  # smaller assets are sent as they are


def _swagger_dist() -> Path:
    """flask-swagger-ui's copy of swagger-ui-dist (its version pinned in requirements)."""
    spec = importlib.util.find_spec("flask_swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("flask-swagger-ui is not installed: pip install -r requirements")
    return Path(spec.submodule_search_locations[0]) / "dist"


def asset_files() -> dict[str, Path]:
    """Every file `/ui/NAME` serves, by name: ours, and Swagger UI's three."""
    ours = {p.name: p for p in UI_DIR.iterdir() if p.suffix in (".js", ".css", ".png")}
    dist = _swagger_dist()
    swagger = {
        "swagger-ui-bundle.js": dist / "swagger-ui-bundle.js",
        "swagger-ui.css": dist / "swagger-ui.css",
        "favicon.png": dist / "favicon-32x32.png",
    }
    return {**ours, **swagger}


@dataclass(frozen=True)
class Asset:
    """A file as served: its bytes, a gzip copy when worth it, its type and its ETag."""

    data: bytes
    compressed: bytes | None
    content_type: str
    etag: str

    @classmethod
    def read(cls, path: Path) -> Asset:
        data = path.read_bytes()
        compressed = (
            gzip.compress(data, mtime=0)
            if len(data) > COMPRESS_OVER_BYTES and path.suffix != ".png"
            else None
        )
        etag = hashlib.sha256(data).hexdigest()[:32]
        return cls(data, compressed, TYPES[path.suffix], etag)


@cache
def _assets() -> dict[str, Asset]:
    """Read once per process, on the first page or asset asked for."""
    pages = {name: UI_DIR / name for name in set(PAGES.values())}
    return {name: Asset.read(path) for name, path in {**asset_files(), **pages}.items()}


def page(request: Request) -> Response:
    """The HTML page for the request's path."""
    return _send(request, PAGES[request.path])


def asset(request: Request, name: str) -> Response:
    """A script, style or image of the pages, or 404."""
    if name in PAGES.values() or name not in _assets():
        raise NotFound(f"no asset {name!r} in /ui/")
    return _send(request, name)


def _send(request: Request, name: str) -> Response:
    item = _assets()[name]
    response = Response(item.data, content_type=item.content_type)
    etag = item.etag
    if item.compressed is not None and request.accept_encodings["gzip"]:
        response.set_data(item.compressed)
        response.headers["Content-Encoding"] = "gzip"
        etag += "-gzip"  # another representation, another tag
    response.headers["Vary"] = "Accept-Encoding"
    response.set_etag(etag)
    # Checked again on each use (a deploy changes them), but a 304 when unchanged.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.make_conditional(request)  # a 304 for an unchanged If-None-Match
    return response
