"""Stream-token redaction of log records (gateway.logs); the process-level test is
tests/e2e/test_log_redaction.py."""

from __future__ import annotations

import io
import logging
import logging.config

import pytest
from uvicorn.logging import AccessFormatter

from gateway.logs import RedactStreamTokens, install_redaction, log_config, redact

TOKEN = "q2V8mX0bN7cR4tY1uI9oP3aS6dF5gH8jK2lZ0xC7vB4"


@pytest.mark.parametrize(("text", "expected"), [
    (f"GET /stream/twilio/call_1/{TOKEN} HTTP/1.1", "GET /stream/twilio/call_1/*** HTTP/1.1"),
    (f'"WebSocket /stream/raw/call_1/{TOKEN}" [accepted]', '"WebSocket /stream/raw/call_1/***" [accepted]'),
    (f"wss://gw.example.com/voice/stream/telnyx/c/{TOKEN}", "wss://gw.example.com/voice/stream/telnyx/c/***"),
    (f"/stream/twilio/c/{TOKEN}?t={TOKEN}#x", "/stream/twilio/c/***?***#x"),
    (f"/stream/twilio/c/{TOKEN}/more", "/stream/twilio/c/***/more"),
    ("GET /calls/call_1 HTTP/1.1", "GET /calls/call_1 HTTP/1.1"),
    ("/stream/twilio/c/", "/stream/twilio/c/"),
])  # fmt: skip
def test_redact(text, expected):
    assert redact(text) == expected


def _record(name: str, msg: str, args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, exc_info)


def test_access_records_keep_their_fields_for_uvicorns_formatter():
    rec = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d',
                  ("127.0.0.1:5000", "GET", f"/stream/twilio/call_1/{TOKEN}", "1.1", 404))  # fmt: skip
    assert RedactStreamTokens().filter(rec)
    assert isinstance(rec.args, tuple) and rec.args[4] == 404
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(rec)
    assert line == '127.0.0.1:5000 - "GET /stream/twilio/call_1/*** HTTP/1.1" 404 Not Found'


def test_tokens_in_objects_split_arguments_and_tracebacks_are_redacted():
    class Url:
        def __str__(self) -> str:
            return f"ws://h/stream/twilio/c/{TOKEN}"

    f = RedactStreamTokens()
    rec = _record("websockets.server", "connect %s", (Url(),))
    f.filter(rec)
    assert TOKEN not in rec.getMessage() and rec.getMessage().endswith("/***")
    split = _record("gateway.app", "%s/%s", ("/stream/twilio/c", TOKEN))
    f.filter(split)
    assert split.getMessage() == "/stream/twilio/c/***"
    try:
        raise ValueError(f"bad path /stream/twilio/c/{TOKEN}")
    except ValueError:
        import sys

        rec = _record("uvicorn.error", "Exception in ASGI application", None, sys.exc_info())
    f.filter(rec)
    out = logging.Formatter().format(rec)
    assert TOKEN not in out and "ValueError: bad path /stream/twilio/c/***" in out


def test_log_config_filters_every_handler_and_keeps_the_access_log(capsys):
    logging.config.dictConfig(log_config("INFO"))
    try:
        path = f"/stream/twilio/c/{TOKEN}"
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", path, "1.1", 404)
        for name in ("uvicorn.error", "gateway.app", "websockets.server"):
            logging.getLogger(name).info("seen %s", path)
        out = capsys.readouterr()
        assert TOKEN not in out.out + out.err and "Logging error" not in out.err
        assert '"GET /stream/twilio/c/*** HTTP/1.1" 404' in out.out  # access log: stdout, as uvicorn's
        assert out.err.count("seen /stream/twilio/c/***") == 3
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "root": {"handlers": [], "level": "WARNING"}})  # fmt: skip


def test_install_redaction_covers_handlers_configured_elsewhere():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        assert install_redaction() >= 1 and install_redaction() == 0  # idempotent
        logging.getLogger("gateway.test").warning("url %s", f"/stream/raw/c/{TOKEN}")
        assert TOKEN not in stream.getvalue() and "/stream/raw/c/***" in stream.getvalue()
    finally:
        root.removeHandler(handler)


def test_carrier_sdk_loggers_never_log_below_info_even_at_debug():
    """The Vonage SDK logs request headers (its signed application JWT) at DEBUG."""
    import logging

    from gateway.logs import _CREDENTIAL_LOGGERS, setup_logging

    try:
        setup_logging("DEBUG")
        assert logging.getLogger("gateway.call").isEnabledFor(logging.DEBUG)
        for name in _CREDENTIAL_LOGGERS:
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
            assert not logging.getLogger(f"{name}.sub").isEnabledFor(logging.DEBUG), name
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "root": {"handlers": [], "level": "WARNING"}})  # fmt: skip


def test_ice_pair_checks_are_logged_only_at_debug():
    """aioice logs every candidate pair's state change at INFO (an offer names the candidates)."""
    import logging

    from gateway.logs import setup_logging

    try:
        for level, info, warning in (("INFO", False, True), ("WARNING", False, True), ("ERROR", False, False),
                                     ("DEBUG", True, True)):  # fmt: skip
            setup_logging(level)
            ice = logging.getLogger("aioice.ice")
            assert (ice.isEnabledFor(logging.INFO), ice.isEnabledFor(logging.WARNING)) == (info, warning), level
        assert logging.getLogger("gateway.webrtc").isEnabledFor(logging.DEBUG)
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "root": {"handlers": [], "level": "WARNING"}})  # fmt: skip
