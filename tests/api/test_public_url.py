"""Public URLs: one builder for the stream URL handed out and the URL Twilio's signature is
checked against; ``GATEWAY_PUBLIC_URL`` is validated at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
import websockets
from pydantic import ValidationError
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from gateway.app import create_app
from gateway.config import Settings, check_public_url
from gateway.simulator.dialects import TwilioCaller

INLINE = {"systemPrompt": "Be brief.", "voice": "joe", "language": "en-US", "greeting": "Hi!",
          "firstSpeaker": "user"}  # fmt: skip
AUTH_TOKEN = "twilio-auth-token-for-tests"


@pytest.mark.parametrize(
    ("given", "normalised"),
    [("", ""), ("  ", ""), ("https://voice.example.com", "https://voice.example.com"),
     ("HTTPS://Voice.Example.COM/", "https://voice.example.com"),
     ("http://127.0.0.1:8080/gw/", "http://127.0.0.1:8080/gw"),
     ("https://[::1]:8443/a/b", "https://[::1]:8443/a/b")],
)  # fmt: skip
def test_good_public_urls_are_normalised(given: str, normalised: str) -> None:
    assert check_public_url(given) == normalised
    assert Settings(_env_file=None, public_url=given).public_url == normalised


@pytest.mark.parametrize(
    ("given", "why"),
    [("voice.example.com", "has no scheme"), ("voice.example.com/gw", "has no scheme"),
     ("wss://voice.example.com", "scheme must be http or https"), ("ftp://x.example", "scheme"),
     ("https://x.example/?a=1", "query string or fragment"), ("https://x.example#top", "fragment"),
     ("https://user:pw@x.example", "user name or password"), ("https://x.example:0", "bad host or port"),
     ("https://x.example:70000", "bad host or port"), ("https:///gw", "bad host or port"),
     ("https://bad_host!", "bad host or port"), ("https://x.example/a b", "path prefix")],
)  # fmt: skip
def test_bad_public_urls_are_refused_clearly(given: str, why: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_PUBLIC_URL") as info:
        check_public_url(given)
    assert why in str(info.value) and "http(s)://host[:port][/prefix]" in str(info.value)
    with pytest.raises(ValidationError, match=why):
        Settings(_env_file=None, public_url=given)


def test_create_app_refuses_a_bad_public_url_that_skipped_validation(settings: Settings) -> None:
    copied = settings.model_copy(update={"public_url": "voice.example.com"})  # no validators run
    with pytest.raises(ValueError, match="GATEWAY_PUBLIC_URL 'voice.example.com' has no scheme"):
        create_app(copied, warm_up=False)


def test_gateway_serve_fails_at_start_with_a_clear_message(tmp_path: Any) -> None:
    env = {**os.environ, "GATEWAY_PUBLIC_URL": "voice.example.com", "GATEWAY_PORT": "9",
           "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()", "serve"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "GATEWAY_PUBLIC_URL 'voice.example.com' has no scheme" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


async def _close_code_after_opening(url: str, signature: str | None) -> int | None:
    """Connect with an optional ``X-Twilio-Signature``, send start then stop; the close code."""
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    d = TwilioCaller()
    async with connect(url, additional_headers=headers, open_timeout=5) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):  # a refused socket is closed at once
            for frame in [*d.opening({}), d.stop()]:
                await ws.send(frame)
        await asyncio.wait_for(ws.wait_closed(), 10)
        return ws.close_code


@pytest.mark.slow
@pytest.mark.parametrize("public", ["http://127.0.0.1:{port}", "HTTP://127.0.0.1:{port}/"])
async def test_signed_twilio_stream_from_the_rest_url_connects(served: Any, public: str) -> None:
    app, port, key = await served(public_url=public, twilio_auth_token=AUTH_TOKEN)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as c:
        created = (await c.post("/calls/inline", json=INLINE)).json()
        url = created["streamUrl"]
        assert url.startswith(f"ws://127.0.0.1:{port}/stream/twilio/{created['callId']}/")
        assert f'url="{url}"' in created["instructions"]["body"]
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
        assert await _close_code_after_opening(url, "forged") == 4403
        assert await _close_code_after_opening(url, signature) == 1000
        for _ in range(100):
            record = (await c.get(f"/calls/{created['callId']}")).json()
            if record["status"] != "in_progress":
                break
            await asyncio.sleep(0.05)
        assert record["status"] == "completed" and record["endReason"] == "carrier_stop"


@pytest.mark.slow
async def test_signature_covers_the_public_url_behind_a_prefix_stripping_proxy(served: Any) -> None:
    app, port, key = await served(public_url="https://voice.example.com/gw/", twilio_auth_token=AUTH_TOKEN)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as c:
        url = (await c.post("/calls/inline", json=INLINE)).json()["streamUrl"]
    assert url.startswith("wss://voice.example.com/gw/stream/twilio/call_")
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
    # what the proxy forwards: the same path without its /gw prefix, to the gateway's own port
    direct = f"ws://127.0.0.1:{port}" + url.removeprefix("wss://voice.example.com/gw")
    assert await _close_code_after_opening(direct, signature) == 1000
