"""The API documentation works in a network without internet (a care network such as Sjunet): ``/docs``
(Swagger UI) and ``/redoc`` load their JavaScript and CSS from the service itself (``service/app.py``,
the fastapi-offline package), and a real headless Chromium whose every name outside loopback resolves
to nothing renders every operation of ``/openapi.json`` on both pages, from a real running server.

Chromium is Debian's package ``chromium`` (``.ci/run`` installs it); where it is missing these tests skip,
saying so."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian's package `chromium`; .ci/run installs it)"
)
# Every host name but loopback's resolves to nothing: the browser reaches no CDN, as in a closed network.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
# What FastAPI's own pages would load from outside: a CDN, Google's fonts, FastAPI's favicon.
OUTSIDE = re.compile(r"https?://|//cdn|fonts\.googleapis")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running(tmp_path_factory.mktemp("docs")) as (url, _process):
        yield url


def rendered(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, in a headless Chromium with the network closed."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # run as root in CI
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            OFFLINE,
            # The page's own time, not the wall clock's: ended once the page is idle, or after this.
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def operation_ids(base: str) -> set[str]:
    spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
    return {operation["operationId"] for path in spec["paths"].values() for operation in path.values()}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_documentation_pages_load_nothing_from_outside_the_service(base: str, page: str) -> None:
    response = httpx.get(f"{base}{page}", timeout=10)

    assert response.status_code == 200
    assert not OUTSIDE.findall(response.text), response.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert assets, "the page names its scripts and styles"
    for asset in assets:
        served = httpx.get(f"{base}{asset}", timeout=10)
        assert served.status_code == 200, asset
        # Served with its type: the security headers' nosniff makes a browser refuse a script without it.
        assert served.headers["content-type"].split(";")[0] in {
            "text/javascript",
            "text/css",
            "image/png",
        }, asset


@needs_chromium
def test_the_browser_used_reaches_no_cdn(tmp_path: Path) -> None:
    """The control: the same browser, given FastAPI's default page (Swagger UI from a CDN), renders nothing,
    so that what the tests below see came from the service."""
    page = tmp_path / "cdn.html"
    page.write_text(
        '<html><body><script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js">'
        "</script><script>document.body.dataset.loaded = typeof SwaggerUIBundle</script></body></html>",
        encoding="utf-8",
    )

    dom = rendered(page.as_uri(), tmp_path / "profile")

    assert 'data-loaded="undefined"' in dom


@needs_chromium
def test_swagger_ui_renders_every_operation_offline(base: str, tmp_path: Path) -> None:
    dom = rendered(f"{base}/docs", tmp_path / "profile")

    # Swagger UI gives each operation's block the id operations-<tag>-<operationId>, and each tag's
    # section operations-tag-<tag>.
    shown = set(re.findall(r'id="operations-(?!tag-)[^-"]+-([^"]+)"', dom))
    assert shown == operation_ids(base)
    assert 'data-path="/api/citizen/v1/consent"' in dom


@needs_chromium
def test_redoc_renders_every_operation_offline(base: str, tmp_path: Path) -> None:
    dom = rendered(f"{base}/redoc", tmp_path / "profile")

    shown = set(re.findall(r'id="operation/([^"]+)"', dom))
    assert shown == operation_ids(base)
