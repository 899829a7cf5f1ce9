"""The playground in a real Chromium, no call placed: the page loads from the gateway alone, lists
the key's agents, shows the API's errors, and keeps the API key in memory only."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

AGENT = {"systemPrompt": "You take bookings.", "voice": "joe", "language": "en-US", "greeting": "Hi."}


async def test_page_loads_same_origin_only_and_lists_the_keys_agents(browser, served) -> None:
    async with served.client() as api:
        made = [(await api.post("/agents", json={"name": n, **AGENT})).json() for n in ("Front desk", "Night line")]
    context = await browser.new_context(base_url=served.http)
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto("/playground")
    assert await page.title() == "Gateway playground"
    assert await page.locator("#state").text_content() == "idle"
    assert await page.locator("#hangup").is_disabled() and await page.locator("#call").is_enabled()

    await page.fill("#apiKey", served.key)
    await page.press("#apiKey", "Tab")  # change → GET /agents
    options = page.locator("#agent option")
    await options.nth(2).wait_for(state="attached")
    labels = await options.all_text_contents()
    assert labels[1:] == ["Front desk (local, joe)", "Night line (local, joe)"]
    assert [await options.nth(i).get_attribute("value") for i in (1, 2)] == [a["id"] for a in made]
    await page.select_option("#agent", made[1]["id"])
    assert await page.locator("#systemPrompt").is_disabled()  # a stored agent: the inline fields do not apply
    await page.select_option("#agent", "")
    assert await page.locator("#systemPrompt").is_enabled()

    origin = urlsplit(served.http)
    assert requested and all(urlsplit(u)[:2] == origin[:2] for u in requested), requested
    assert not errors
    await context.close()


async def test_the_api_key_stays_in_memory_only(browser, served) -> None:
    context = await browser.new_context(base_url=served.http)
    page = await context.new_page()
    await page.goto("/playground")
    await page.fill("#apiKey", served.key)
    await page.click("#refreshAgents")
    await expect(page.locator("#agent")).to_have_attribute("data-loaded", re.compile(r"^\d+$"))
    stored = await page.evaluate("""async () => ({
        local: Object.keys(localStorage).length, session: Object.keys(sessionStorage).length,
        cookie: document.cookie, dbs: indexedDB.databases ? (await indexedDB.databases()).length : 0,
        caches: (await caches.keys()).length,
    })""")
    assert stored == {"local": 0, "session": 0, "cookie": "", "dbs": 0, "caches": 0}
    assert await context.cookies() == []
    state = await context.storage_state()
    assert served.key not in str(state)
    await page.reload()
    assert await page.input_value("#apiKey") == ""  # nothing brings it back
    await context.close()


async def test_api_errors_are_shown_with_their_fields(browser, served) -> None:
    context = await browser.new_context(base_url=served.http, permissions=["microphone"])
    page = await context.new_page()
    await page.goto("/playground")
    error = page.locator("#error")

    await page.click("#call")  # no key: said before the microphone opens
    await error.wait_for()
    assert "API key" in await error.text_content()
    assert await page.locator("#call").is_enabled()

    await page.fill("#apiKey", "gw_not_a_key")
    await page.click("#refreshAgents")
    await expect(error).to_have_text(re.compile(r"^unauthorized \(401\)"))
    assert "invalid or revoked API key" in await error.text_content()  # the API's own message

    await page.fill("#apiKey", served.key)
    await page.fill("#systemPrompt", "")
    await page.fill("#voice", "")
    await page.click("#call")
    await expect(error).to_have_text(re.compile(r"^validation_error \(422\)"))
    text = await error.text_content()
    assert "• systemPrompt: " in text and "• voice: " in text, text
    assert await page.get_attribute("#systemPrompt", "aria-invalid") == "true"
    assert await page.get_attribute("#voice", "aria-invalid") == "true"
    await expect(page.locator("#call")).to_be_enabled()
    assert await page.locator("#state").text_content() == "idle"  # no call was created
    assert await page.evaluate("window.playground.localStream") is None  # the microphone is closed again

    await page.fill("#systemPrompt", "You are a test agent.")
    await page.fill("#voice", "joe")
    await page.click("#call")  # a valid call clears the previous error first
    await expect(page.locator("#callId")).to_have_text(re.compile(r"^call_"))
    await expect(error).to_be_hidden()
    await context.close()
