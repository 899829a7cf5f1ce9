"""``GET /playground`` and its assets: served with no key, same-origin only, the ids the browser
test and users rely on, and nothing that stores the API key."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from gateway.api import create_api
from gateway.config import Settings
from gateway.playground import ASSETS, CSP, STATIC
from gateway.store import Store

#: The ids SPEC12 §5 fixes (tests/browser drives them).
STABLE_IDS = {"apiKey", "call", "hangup", "state", "transcript", "record"}


class _Page(HTMLParser):
    """Every element id and every src/href of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href") and value:
                self.refs.append(value)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture
async def anon(tmp_path) -> httpx.AsyncClient:
    """The REST API app (which serves the playground) over a fresh store, with no API key."""
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    store = Store(url)
    store.create_all()
    app = create_api(store, Settings(_env_file=None, database_url=url, public_url="", recordings_dir=tmp_path / "rec"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as c:
        yield c
    store.close()


async def test_page_needs_no_key_and_allows_this_origin_only(anon: httpx.AsyncClient) -> None:
    r = await anon.get("/playground")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == CSP and "default-src 'none'" in CSP
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-cache"
    page = _parse(r.text)
    assert STABLE_IDS <= page.ids
    # assets are relative to the page (so a path prefix in the public URL is kept), none external;
    # an empty icon, so the browser asks for no /favicon.ico
    assert sorted(page.refs) == ["data:,", "playground/static/playground.css", "playground/static/playground.js"]
    assert (await anon.head("/playground")).status_code == 200


@pytest.mark.parametrize("name", sorted(ASSETS))
async def test_assets_are_served_with_their_types(anon: httpx.AsyncClient, name: str) -> None:
    r = await anon.get(f"/playground/static/{name}")
    assert r.status_code == 200 and r.headers["content-type"] == ASSETS[name]
    assert r.content == (STATIC / name).read_bytes()
    assert r.headers["content-security-policy"] == CSP


@pytest.mark.parametrize("name", ["index.html", "missing.js", "..%2F__init__.py", "%2e%2e%2fplayground.js"])
async def test_other_names_are_404_in_the_error_envelope(anon: httpx.AsyncClient, name: str) -> None:
    r = await anon.get(f"/playground/static/{name}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_the_playground_is_not_part_of_the_api_document(anon: httpx.AsyncClient) -> None:
    doc = (await anon.get("/openapi.json")).json()
    assert not [p for p in doc["paths"] if p.startswith("/playground")]


def test_no_external_resources_and_no_storage_of_the_key() -> None:
    """No CDN, no fonts, no absolute URLs; the key is never written to storage or cookies."""
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|\burl\(", text), path.name
    script = (STATIC / "playground.js").read_text()
    for api in ("localStorage", "sessionStorage", "document.cookie", "indexedDB", "caches."):
        assert api not in script, api
    # every request to the gateway leaves cookies out (the key goes in X-API-Key only)
    assert 'credentials: "omit"' in script and script.count("fetch(") == 1


def test_every_page_file_ships_in_the_package() -> None:
    """A wheel carries only the non-Python files MANIFEST.in names (include-package-data)."""
    from tests.conftest import ROOT

    rule = next(line.split() for line in (ROOT / "MANIFEST.in").read_text().splitlines()
                if line.startswith("recursive-include gateway/playground/static"))  # fmt: skip
    shipped = {p.name for p in STATIC.iterdir() if any(p.match(g) for g in rule[2:])}
    assert shipped == {p.name for p in STATIC.iterdir()} == set(ASSETS) | {"index.html"}
