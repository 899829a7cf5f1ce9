"""Stream tokens never reach the logs: a gateway process (``gateway serve``, DEBUG) serves a real
call over a real socket, plus HTTP requests and refused sockets that carry the token in the path;
everything the process writes (uvicorn access and error logs, websockets, our loggers) is read
back. Before the redaction filter, uvicorn's access log held every token it saw."""

from __future__ import annotations

import re
import signal

import httpx
import pytest
import websockets

from tests.e2e.gateway_process import GREETING, KEY, GatewayProcess, LiveCall, wait_recorded
from tests.llm.fake_servers import FakeRealtimeServer, Reply, Say

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(90)]


async def _refused(url: str) -> int | None:
    """Open a stream socket the gateway refuses; return its close code."""
    async with websockets.connect(url, open_timeout=5, close_timeout=5) as ws:
        try:
            await ws.recv()
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
    return None


async def test_no_stream_token_in_any_log_line(tmp_path) -> None:
    async with FakeRealtimeServer(api_key=KEY, replies=[Reply([Say(GREETING)])]) as model:
        gw = GatewayProcess(tmp_path, openai_realtime_url=model.url, openai_api_key=KEY, log_level="DEBUG")
        try:
            await gw.start()
            created = await gw.create_call()
            call_id, url = created["callId"], created["streamUrl"]
            token = url.rsplit("/", 1)[1]
            assert len(token) >= 40 and url.endswith(f"/stream/twilio/{call_id}/{token}")
            # REST requests with the token in the path (and in a query string after it)
            async with httpx.AsyncClient(base_url=gw.http, timeout=5) as http:
                for path in (f"/stream/twilio/{call_id}/{token}", f"/stream/twilio/{call_id}/{token}?t={token}",
                             f"/stream/twilio/{call_id}/{token}/extra"):  # fmt: skip
                    assert (await http.get(path)).status_code in (400, 403, 404, 405)
            # sockets refused after the token check: wrong carrier, and the right URL twice
            # (the second while the call streams)
            assert await _refused(url.replace("/stream/twilio/", "/stream/telnyx/")) == 4400
            call = LiveCall(url, stay_s=1.5)
            await wait_recorded(gw, call_id, seconds=0.5)
            assert await _refused(url) == 4409
            report = await call.report(timeout_s=20)
            assert report.close_code is not None
            gw.signal(signal.SIGTERM)
            await gw.wait(15)
        finally:
            gw.stop()
    log = gw.log
    assert token not in log, [line for line in log.splitlines() if token in line][:5]
    assert token[:16] not in log  # no fragment of it either
    # the access log is still there, with the path minus its token
    assert re.search(rf'"GET /stream/twilio/{call_id}/\*\*\* HTTP/1\.1" 40\d', log), log[-3000:]
    assert f'"POST /calls/inline HTTP/1.1" 201' in log
    assert f"/stream/twilio/{call_id}/***" in log and f"/stream/telnyx/{call_id}/***" in log
    websocket_lines = [line for line in log.splitlines() if "WebSocket /stream/" in line]
    assert len(websocket_lines) >= 3, log[-3000:]
    print(f"\n{len(log.splitlines())} log lines, {len(websocket_lines)} WebSocket lines, no token")
