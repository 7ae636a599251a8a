"""The pages (function/service/pages.py) as HTTP sees them: what is served, under which CSP, and
what
needs a key; and the report files and promotion history the model card reads. The pages' own
behaviour in a browser is tests/test_browser.py's."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from function.core.config import load_config
from function.core.store import ModelStore
from function.service.pages import PAGE_CSP, PAGES
from function.service.responses import SECURITY_HEADERS
from tests.conftest import KEY, ROOT
from tests.inprocess import InProcess, in_process
from training.__main__ import main

AUTH = {"X-API-Key": KEY}
API_CSP = SECURITY_HEADERS["Content-Security-Policy"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two Iris versions with their training reports (one training, published twice)."""
    tmp = tmp_path_factory.mktemp("pages") / "iris"
    assert main(["train", "--out", str(tmp), "--cv", "2"]) == 0
    return tmp, tmp


@pytest.fixture(scope="module")
def store(artifacts: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """Both published and promoted in turn: b is current, a is in its history."""
    store = ModelStore((tmp_path_factory.mktemp("store") / "iris").as_uri())
    for artifact, version in zip(artifacts, ("a", "b"), strict=True):
        store.publish(artifact, version)
        store.promote(version)
    return store


def serve(store: ModelStore, **env: str) -> Iterator[InProcess]:
    with in_process({"MODEL_URI": store.uri, "API_KEYS": KEY, **env}) as service:
        yield service


@pytest.fixture(scope="module")
def service(store: ModelStore) -> Iterator[InProcess]:
    yield from serve(store)


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] in ("script", "style") and data.strip():
            self.inline_script = True


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


@pytest.mark.parametrize("path", sorted(PAGES))
def test_pages_need_no_key_and_carry_the_page_csp(service: InProcess, path: str) -> None:
    response = service.client.get(path)

    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"] == PAGE_CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_csp_is_the_narrowest_that_works() -> None:
    directives = dict(d.split(" ", 1) for d in PAGE_CSP.split("; "))

    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"] == "'self'"
    # nothing inline, no eval, no other origin anywhere
    assert not any(word in PAGE_CSP for word in ("unsafe", "http", "*", "nonce", "sha256-"))


@pytest.mark.parametrize("path", sorted(PAGES))
def test_pages_hold_nothing_inline_and_load_only_their_own_assets(
    service: InProcess, path: str
) -> None:
    tags = parse(service.client.get(path).get_data(as_text=True))

    assert not tags.inline_script
    for tag, attrs in tags.tags:
        assert "style" not in attrs and not any(a.startswith("on") for a in attrs), tag
        url = attrs.get("src") or (attrs.get("href") if tag == "link" else None)
        if url:
            assert url.startswith("/ui/"), url
            asset = service.client.get(url)
            assert asset.status_code == 200, url
            assert asset.headers["Content-Security-Policy"] == PAGE_CSP


def test_the_api_keeps_its_own_csp(service: InProcess) -> None:
    for response in (
        service.client.get("/model", headers=AUTH),
        service.client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, headers=AUTH),
        service.client.get("/openapi.json"),
        service.client.get("/model/files/roc_curve.png", headers=AUTH),  # a 404: no such plot
        service.client.get("/model/files/calibration.png", headers=AUTH),
    ):
        assert response.headers["Content-Security-Policy"] == API_CSP


def test_assets_are_compressed_and_revalidated(service: InProcess) -> None:
    plain = service.client.get("/ui/swagger-ui-bundle.js")
    packed = service.client.get("/ui/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"})

    assert plain.content_type == "text/javascript; charset=utf-8"
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.data) == plain.data
    assert len(packed.data) < len(plain.data) / 2
    assert plain.headers["ETag"] != packed.headers["ETag"]
    assert plain.headers["Cache-Control"] == "no-cache"
    again = service.client.get("/ui/ui.js", headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status_code == 200  # another file's tag
    etag = service.client.get("/ui/ui.js").headers["ETag"]
    assert service.client.get("/ui/ui.js", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize(
    "path", ["/ui/index.html", "/ui/nothing.js", "/ui/..%2Ffunction%2Fmain.py", "/ui/", "/ui"]
)
def test_only_the_pages_assets_are_served(service: InProcess, path: str) -> None:
    response = service.client.get(path)

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("env", "on"),
    [({}, True), ({"UI": "false"}, False), ({"AIP_HTTP_PORT": "8080"}, False),
     ({"AIP_HTTP_PORT": "8080", "UI": "true"}, True)],
)  # fmt: skip
def test_ui_setting_turns_the_pages_off_and_vertex_starts_without_them(
    env: dict[str, str], on: bool
) -> None:
    assert load_config({"MODEL_URI": "file:///tmp/m", "API_KEYS": KEY, **env}).ui is on


def test_with_ui_off_no_page_or_asset_is_served(store: ModelStore) -> None:
    for service in serve(store, UI="false"):
        for path in [*PAGES, "/ui/ui.js"]:
            assert service.client.get(path).status_code == 404, path
        assert service.client.get("/model", headers=AUTH).status_code == 200


def test_report_files_need_the_key_and_are_the_published_bytes(
    service: InProcess, artifacts: tuple[Path, Path]
) -> None:
    model = service.client.get("/model", headers=AUTH).get_json()
    plots = [name for name in model["report"]["files"] if name.endswith(".png")]

    assert service.client.get(f"/model/files/{plots[0]}").status_code == 401
    for name in plots:
        response = service.client.get(f"/model/files/{name}", headers=AUTH)
        assert response.status_code == 200
        assert response.content_type == "image/png"
        assert response.data == (artifacts[1] / name).read_bytes()
    report = service.client.get("/model/files/report.html", headers=AUTH)
    assert report.headers["Content-Disposition"] == 'attachment; filename="report.html"'


def test_only_report_files_are_served_and_a_refusal_lists_them(service: InProcess) -> None:
    response = service.client.get("/model/files/model.joblib", headers=AUTH)

    assert response.status_code == 404
    problem = response.get_json()
    assert "no report file 'model.joblib'" in problem["detail"]
    assert "confusion_matrix.png" in problem["detail"]


def test_a_report_file_changed_in_the_store_is_refused(
    artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    root = tmp_path / "iris"
    store = ModelStore(root.as_uri())
    store.publish(artifacts[0], "a")
    store.promote("a")
    for service in serve(store):
        (root / "versions" / "a" / "calibration.png").write_bytes(b"\x89PNG not the plot")
        response = service.client.get("/model/files/calibration.png", headers=AUTH)
        assert response.status_code == 503
        assert "calibration.png" in response.get_json()["detail"]


def test_the_model_shows_its_promotion_history_and_limits(service: InProcess) -> None:
    model = service.client.get("/model", headers=AUTH).get_json()

    assert model["promotion"]["version"] == "b"
    assert model["promotion"]["previous"] == "a"
    assert model["promotion"]["history"] == ["a"]
    assert model["promotion"]["promoted_at"].endswith("Z")
    assert model["limits"] == {"max_instances_per_request": 1000, "max_request_bytes": 1_048_576}


def test_a_pinned_version_has_no_promotion(store: ModelStore) -> None:
    for service in serve(store, MODEL_VERSION="a"):
        model = service.client.get("/model", headers=AUTH).get_json()
        assert (model["version"], model["promotion"]) == ("a", None)


def test_swagger_ui_is_the_pinned_bundle(service: InProcess) -> None:
    """The docs page's assets are flask-swagger-ui's, at the version requirements pin."""
    pinned = next(
        line.split("==")[1]
        for line in (Path(__file__).parent.parent / "function/requirements.txt").read_text().split()
        if line.startswith("flask-swagger-ui==")
    )
    from function.service.pages import asset_files

    dist = asset_files()["swagger-ui-bundle.js"].parent
    assert (dist / "VERSION").read_text().strip() == f"v{pinned}"
    served = service.client.get("/ui/swagger-ui-bundle.js").data
    assert (
        hashlib.sha256(served).digest()
        == hashlib.sha256((dist / "swagger-ui-bundle.js").read_bytes()).digest()
    )
    assert json.loads(service.client.get("/openapi.json").data)["paths"]["/model/files/{name}"]


def test_the_image_ships_the_pages() -> None:
    """The image's context is function/ less .dockerignore: every page and asset of ours is in
    it (Swagger UI's come from function/requirements.txt, checked above)."""
    from function.service.pages import UI_DIR, asset_files

    context = ROOT / "function"
    ignored = [
        line for line in (context / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    ours = [UI_DIR / name for name in set(PAGES.values())]
    ours += [p for p in asset_files().values() if p.parent == UI_DIR]
    assert len(ours) >= 6
    for path in ours:
        relative = path.relative_to(context)
        assert not any(relative.match(pattern) for pattern in ignored), relative
