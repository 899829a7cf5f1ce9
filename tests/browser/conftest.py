"""Real-browser tests: Debian's Chromium (``/usr/bin/chromium``) driven by Playwright's Python
API against the gateway served on loopback (:func:`tests.e2e.conftest.start_gateway`).

Chromium runs headless with a fake microphone playing a WAV file
(``--use-fake-device-for-media-stream --use-file-for-fake-audio-capture``; it loops the file),
autoplay allowed, loopback ICE candidates allowed and mDNS hiding of host candidates off, and a
fresh profile per launch (Playwright's own temporary ``--user-data-dir``). Playwright's bundled
browsers are never used (no ``playwright install``): without ``/usr/bin/chromium`` these tests
fail in CI (``CI`` set: ``.ci/run`` installs the ``chromium`` package first) and skip, saying
why, elsewhere.

Fixtures are module-scoped (one gateway and one browser per test module, on the module's event
loop): a module sets ``pytestmark = pytest.mark.asyncio(loop_scope="module")``; a module wanting
another fake-microphone file overrides ``capture_wav``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_asyncio

from tests.e2e.conftest import start_gateway, stop_gateway

CHROMIUM = Path("/usr/bin/chromium")


def chromium_args(capture_wav: Path) -> list[str]:
    """Chromium's command-line flags for a playground call (SPEC12 §6), the fake microphone
    playing ``capture_wav`` (16-bit PCM WAV, looped)."""
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={capture_wav}", "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def chromium() -> Path:
    """``/usr/bin/chromium``; missing: a failure in CI, a skip that says how to get it elsewhere."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} not found: the browser tests need Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs it before make test")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def capture_wav(shared_audio: Path) -> Path:
    """What the fake microphone plays (a module may override it)."""
    return shared_audio / "speech" / "goforward.wav"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory, local_engines):
    """One gateway on loopback for the module (the local agent, a fresh SQLite store)."""
    gw, server, task = await start_gateway(tmp_path_factory.mktemp("gateway"), local_engines)
    yield gw
    await stop_gateway(server, task)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: Path, capture_wav: Path):
    """Headless Chromium (``/usr/bin/chromium``) with the fake microphone playing ``capture_wav``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # --mute-audio (Playwright's headless default) is left out: the page plays the agent's audio
        b = await pw.chromium.launch(executable_path=str(chromium), args=chromium_args(capture_wav),
                                     ignore_default_args=["--mute-audio"], timeout=30_000)  # fmt: skip
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser, served):
    """A fresh browser context (its own storage) and page, microphone permission granted, on
    ``/playground``; console errors are collected in ``page.console_errors``."""
    context = await browser.new_context(permissions=["microphone"], base_url=served.http)
    context.set_default_timeout(15_000)
    pg = await context.new_page()
    pg.console_errors = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
    await pg.goto("/playground")
    yield pg
    await context.close()

