"""The webhook outbox's writes: which events each status change adds, to which destinations,
in the change's own transaction; claims, leases and outcomes."""

from __future__ import annotations

import pytest

from gateway.store import CallConfig, Store
from gateway.store.models import Call, CallStatus
from gateway.store.outbox import event_types_of

from tests.store.conftest import Clock


def _call(store: Store, *, tenant: str = "default", webhook_url: str | None = None) -> str:
    call = store.create_call(CallConfig(), "twilio", tenant=tenant, ttl_s=60)[0].id
    if webhook_url:
        with store._session() as s, s.begin():
            s.get(Call, call).webhook_url = webhook_url
    return call


def _types(store: Store, call: str) -> list[str]:
    return [r.event_type for r in store.list_outbox(call_id=call)]


@pytest.mark.parametrize(("status", "types"), [
    ("queued", ("call.queued",)), ("initiated", ()), ("ringing", ("call.ringing",)),
    ("in_progress", ("call.answered",)), ("voicemail", ("call.voicemail", "call.ended")),
    ("completed", ("call.ended",)), ("expired", ("call.ended",)), ("no_answer", ("call.ended",)),
])  # fmt: skip
def test_event_types_of_each_status(status: str, types: tuple[str, ...]) -> None:
    assert event_types_of(CallStatus(status)) == types


def test_every_path_of_the_lifecycle_writes_its_events(store: Store, clock: Clock) -> None:
    ep, _ = store.create_webhook_endpoint("https://hooks.example.com/a")
    call = _call(store)
    store.mark_call_placed(call, "CA1")  # initiated: no event
    store.apply_carrier_status(call, "ringing", raw_status="ringing")
    store.mark_call_started(call, stream_id="MZ1")
    store.finalise_call(call, status="voicemail", end_reason="voicemail", duration_ms=1500)
    assert _types(store, call) == ["call.queued", "call.ringing", "call.answered", "call.voicemail", "call.ended"]
    ended = store.list_outbox(call_id=call)[-1].payload
    assert ended["type"] == "call.ended" and ended["data"]["endReason"] == "voicemail"
    assert ended["data"]["durationMs"] == 1500 and ended["data"]["previousStatus"] == "in_progress"
    assert [r.payload["data"]["seq"] for r in store.list_outbox(call_id=call)] == [0, 2, 3, 4, 4]
    stale = _call(store)
    clock.advance(61)
    assert store.expire_stale_calls() == 1  # the bulk path
    assert _types(store, stale) == ["call.queued", "call.ended"]
    assert store.list_outbox(call_id=stale)[-1].payload["data"]["status"] == "expired"
    assert {r.endpoint_id for r in store.list_outbox()} == {ep.id}


def test_a_rolled_back_change_has_no_events(store: Store) -> None:
    store.create_webhook_endpoint("https://hooks.example.com/a")
    call = _call(store)
    with pytest.raises(RuntimeError), store._session() as s, s.begin():
        store._move(s, call, CallStatus.RINGING, {}, source="gateway")
        raise RuntimeError("the rest of the transaction failed")
    assert store.get_call(call).status is CallStatus.QUEUED and _types(store, call) == ["call.queued"]


def test_destinations_per_tenant_subscription_and_call_url(store: Store) -> None:
    everything, _ = store.create_webhook_endpoint("https://hooks.example.com/all")
    ends, _ = store.create_webhook_endpoint("https://hooks.example.com/end", events=["call.ended"])
    gone, _ = store.create_webhook_endpoint("https://hooks.example.com/gone")
    assert store.delete_webhook_endpoint(gone.id) and not store.delete_webhook_endpoint(gone.id)
    store.create_webhook_endpoint("https://hooks.example.com/other", tenant="other")
    call = _call(store, webhook_url="https://me.example.com/call/1")
    store.apply_carrier_status(call, "no_answer")
    rows = [(r.endpoint_id, r.url, r.event_type) for r in store.list_outbox(call_id=call)]
    assert sorted(rows, key=str) == sorted([
        (everything.id, None, "call.queued"),  # the URL was set after creation here
        (everything.id, None, "call.ended"), (ends.id, None, "call.ended"),
        (None, "https://me.example.com/call/1", "call.ended"),
    ], key=str)  # fmt: skip
    assert store.enqueue_call_report(call) == 2  # the endpoint taking every type, and the call's URL
    assert {e.id for e in store.list_webhook_endpoints()} == {everything.id, ends.id}
    with pytest.raises(ValueError):
        store.create_webhook_endpoint("https://x.example.com", events=["call.nope"])


def test_node_lost_superseded_sends_a_new_ended(store: Store) -> None:
    store.create_webhook_endpoint("https://hooks.example.com/a")
    call = _call(store)
    store.mark_call_started(call, stream_id="MZ1", node_id="n1", node_run="r1", lease_s=30)
    store.finalise_call(call, status="failed", end_reason="node_lost", error_code="node_lost", duration_ms=0)
    store.finalise_call(call, status="completed", end_reason="caller_hangup", duration_ms=2000)
    ended = [r.payload["data"] for r in store.list_outbox(call_id=call) if r.event_type == "call.ended"]
    assert [(e["status"], e["endReason"]) for e in ended] == [("failed", "node_lost"), ("completed", "caller_hangup")]
    assert ended[1]["detail"]["supersedes"] == "node_lost"


def test_claims_are_exclusive_and_leases_lapse(store: Store, clock: Clock) -> None:
    store.create_webhook_endpoint("https://hooks.example.com/a")
    _call(store)
    (a,) = store.claim_webhooks("a", lease_s=30)
    assert a.secret and a.secret not in repr(a) and a.url == "https://hooks.example.com/a"
    assert store.claim_webhooks("b", lease_s=30) == []
    clock.advance(31)
    (b,) = store.claim_webhooks("b", lease_s=30)
    assert b.id == a.id
    assert not store.finish_webhook(a.id, "a", status="delivered", http_status=200)  # a's lease is gone
    later = clock.now.replace(year=2027)
    assert store.finish_webhook(b.id, "b", status="pending", http_status=500, error="HTTP 500", next_attempt_at=later)
    assert store.claim_webhooks("c", lease_s=30) == []  # not due yet
    (row,) = store.list_outbox()
    assert (row.status, row.attempts, row.last_status, row.next_attempt_at) == ("pending", 1, 500, later)
    with pytest.raises(ValueError):
        store.finish_webhook(b.id, "b", status="pending")
    with pytest.raises(ValueError):
        store.claim_webhooks("c", lease_s=0)


def test_post_call_results_write_the_report_in_their_transaction(store: Store) -> None:
    store.create_webhook_endpoint("https://hooks.example.com/a", events=["call.report"])
    call = _call(store, webhook_url="https://me.example.com/call/1")
    store.mark_call_started(call, stream_id="MZ1")
    store.finalise_call(call, status="completed", end_reason="caller_hangup", duration_ms=1000)
    rows = store.list_outbox(call_id=call)  # the endpoint takes reports only; the call's URL takes everything
    assert [(r.endpoint_id, r.event_type) for r in rows] == [(None, "call.answered"), (None, "call.ended")]
    assert store.finish_post_call(call, status="skipped", error="no chat endpoint configured")
    reports = [r for r in store.list_outbox(call_id=call) if r.event_type == "call.report"]
    assert len(reports) == 2 and all(r.payload is None and r.status == "pending" for r in reports)
    assert not store.finish_post_call(call, status="completed", summary="again")  # not waiting: no new rows
    assert len([r for r in store.list_outbox(call_id=call) if r.event_type == "call.report"]) == 2


def test_a_claim_does_not_take_a_row_rescheduled_meanwhile(tmp_path, clock: Clock) -> None:
    """Between a claim's SELECT and UPDATE another worker takes the row, fails it and
    schedules it an hour on: the claim leaves it (it is not due)."""
    from datetime import timedelta

    from sqlalchemy import event

    db = f"sqlite:///{tmp_path}/race.db"
    b = Store(db, clock=clock)
    b.create_all()
    a = Store(db, clock=clock)
    try:
        b.create_webhook_endpoint("https://hooks.example.com/a")
        _call(b)
        later = clock.now + timedelta(hours=1)
        fired: list[int] = []

        def between(conn, cursor, statement, params, context, executemany) -> None:  # noqa: ANN001
            if not fired and statement.lstrip().upper().startswith("SELECT WEBHOOK_OUTBOX.ID"):
                fired.append(1)
                (row,) = a.claim_webhooks("A", lease_s=30)
                assert a.finish_webhook(row.id, "A", status="pending", http_status=503, error="HTTP 503",
                                        next_attempt_at=later)  # fmt: skip

        event.listen(b.engine, "after_cursor_execute", between)
        assert b.claim_webhooks("B", lease_s=30) == [] and fired
        (rec,) = b.list_outbox()
        assert rec.next_attempt_at == later and rec.attempts == 1
    finally:
        a.close()
        b.close()


def test_claims_skip_busy_destinations_and_release_gives_back(store: Store) -> None:
    from gateway.store.webhook_delivery import url_origin

    busy, _ = store.create_webhook_endpoint("https://hooks.example.com/busy")
    free, _ = store.create_webhook_endpoint("https://hooks.example.com/free")
    slow = _call(store, webhook_url="https://slow.example:8443/cb?t=1")
    other = _call(store, webhook_url="https://slow.example.org/x")
    for call in (slow, other):  # queued: to both endpoints; ringing: to both and to the call's URL
        store.set_call_status(call, "ringing")
    assert url_origin("https://u@Slow.example:8443/cb?t=1") == "https://u@Slow.example:8443"
    assert url_origin("https://a.example?x") == url_origin("https://a.example") == "https://a.example"
    got = store.claim_webhooks("w", lease_s=30, skip_endpoints=[busy.id], skip_origins=["https://slow.example:8443"])
    assert sorted((d.endpoint_id or d.call_id) for d in got) == sorted([free.id] * 4 + [other])
    assert {d.destination for d in got} == {("endpoint", free.id), ("origin", "https://slow.example.org")}
    assert store.release_webhooks([d.id for d in got], "someone else") == 0
    assert store.release_webhooks([d.id for d in got], "w") == 5
    again = store.claim_webhooks("v", lease_s=30)  # released rows come back with no attempt counted
    assert len(again) == 10 and all(d.attempts == 0 for d in again) and slow in {d.call_id for d in again}


def test_concurrent_rotations_leave_one_live_call_url_secret(store: Store) -> None:
    """A rival's live secret appears between this rotation's UPDATE and INSERT (what two
    rotations at once do on PostgreSQL): the unique index refuses a second live secret, and
    the rotation retries and retires the rival's."""
    from sqlalchemy import event, select
    from sqlalchemy.exc import IntegrityError

    from gateway.store.outbox import WebhookEndpoint

    store.rotate_call_url_secret()
    rival: list[str] = []

    def before(conn, cursor, statement, params, context, executemany) -> None:  # noqa: ANN001
        if not rival and statement.lstrip().upper().startswith("INSERT INTO WEBHOOK_ENDPOINTS"):
            rival.append("x")
            cursor.execute("INSERT INTO webhook_endpoints (id, tenant, kind, secret, created_at) "
                           "VALUES ('whs_rival', 'default', 'call_url', 'whsec_rival', '2026-03-01 09:00:00.000000')")

    event.listen(store.engine, "before_cursor_execute", before)
    _, secret = store.rotate_call_url_secret()
    event.remove(store.engine, "before_cursor_execute", before)
    with store._session() as s:
        live = s.scalars(select(WebhookEndpoint.secret).where(WebhookEndpoint.kind == "call_url",
                                                              WebhookEndpoint.deleted_at.is_(None))).all()  # fmt: skip
        assert list(live) == [secret] and rival
    with pytest.raises(IntegrityError), store._session() as s, s.begin():
        s.add(WebhookEndpoint(id="whs_two", tenant="default", kind="call_url", secret="whsec_two"))
