"""The client's shared layer without I/O: bodies by wire name, error parsing, the wait rule."""

from __future__ import annotations

import httpx
import pytest

from gateway.api.outbound_schemas import OutboundCallCreate, VoicemailIn
from gateway.api.record_schemas import PostCallOut
from gateway.api.schemas import CallOut
from gateway.client.core import GatewayError, WaitPlan, get_call, list_calls, parse, place_call, wire_body


def test_bodies_take_models_wire_json_or_python_names() -> None:
    body = wire_body(OutboundCallCreate, {"to": "+1"}, {"from_": "+2", "system_prompt": "x",
                                                        "voicemail": VoicemailIn(action="hangup")})
    assert body == {"to": "+1", "from": "+2", "systemPrompt": "x",
                    "voicemail": {"detect": True, "action": "hangup", "message": "", "holdGreetingMs": 2000}}
    model = OutboundCallCreate.model_construct(to="+14155550101", _fields_set={"to"})
    assert place_call(model, {"ring_timeout": 9}).json == {"to": "+14155550101", "ringTimeout": 9}
    assert get_call("call/../x").path == "/calls/call%2F..%2Fx"
    assert list_calls(limit=5).request(httpx.Client(base_url="http://h"), 3).url.query == b"limit=5"


def test_errors_keep_the_api_code_message_and_fields_or_name_the_status() -> None:
    op = get_call("call_1")
    body = {"error": {"code": "validation_error", "message": "invalid request body: 1 field (to)",
                      "fields": [{"field": "to", "message": "too short"}]}}
    with pytest.raises(GatewayError) as api:
        parse(op, httpx.Response(422, json=body))
    assert (api.value.status, api.value.code, [(f.field, f.message) for f in api.value.fields]) == (
        422, "validation_error", [("to", "too short")])
    with pytest.raises(GatewayError) as busy:
        parse(op, httpx.Response(503, json={"error": {"code": "unavailable", "message": "full"}},
                                 headers={"Retry-After": "1"}))
    assert busy.value.retry_after == 1.0
    with pytest.raises(GatewayError) as proxy:
        parse(op, httpx.Response(502, text="<html>Bad gateway</html>"))
    assert (proxy.value.code, proxy.value.message) == ("http_502", "<html>Bad gateway</html>")
    with pytest.raises(GatewayError) as odd:
        parse(op, httpx.Response(200, json={"id": "call_1"}))
    assert odd.value.code == "invalid_response"


def test_wait_plan_backs_off_to_its_cap_and_never_sleeps_past_the_deadline() -> None:
    now = [100.0]
    plan = WaitPlan("call_1", 10.0, clock=lambda: now[0])
    delays = []
    while (d := plan.next_delay()) is not None:
        delays.append(d)
        now[0] += d
    assert delays[:3] == pytest.approx([0.2, 0.3, 0.45])
    assert max(delays) == 2.0 and sum(delays) == pytest.approx(10.0)
    assert "no record could be read" in str(plan.expired())
    with pytest.raises(ValueError):
        WaitPlan("call_1", 0)


def _rec(status: str, post: str | None) -> CallOut:
    if post is None:  # a record of a gateway without post-call results
        return CallOut.model_construct(id="call_1", status=status)
    return CallOut.model_construct(id="call_1", status=status, post_call=PostCallOut(status=post, error=None))


@pytest.mark.parametrize("status, post, done", [
    ("in_progress", None, False), ("completed", "pending", False), ("completed", "running", False),
    ("completed", "completed", True), ("no_answer", "skipped", True), ("failed", "failed", True),
    ("completed", None, True),  # a gateway that computes no post-call results
])  # fmt: skip
def test_a_call_is_final_once_terminal_with_post_call_results_final(status, post, done) -> None:
    plan = WaitPlan("call_1", 1.0)
    assert plan.done(_rec(status, post)) is done
    if not done:
        assert f"status {status}" in str(plan.expired())
