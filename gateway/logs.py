"""Logging set-up: one format, and stream tokens redacted from every line.

A stream URL ``/stream/{carrier}/{call_id}/{token}`` carries its call's one-time token in the
path (Twilio drops query strings), and uvicorn's access log, its WebSocket lines
(``"WebSocket /stream/…" [accepted]``), websockets' own loggers and our loggers would all
write it out. :class:`RedactStreamTokens`, a :class:`logging.Filter`, rewrites the token
segment to ``***`` in a record's message, its arguments (keeping their types, so uvicorn's
access formatter still finds ``client_addr``, ``request_line`` and ``status_code``), its
exception text and its stack text. It is attached to **handlers**, which see every record that
reaches them whichever logger it came from (a filter on a logger would miss records
propagated from its children).

* :func:`log_config` is a :func:`logging.config.dictConfig` document: uvicorn's own
  formatters and handlers (access log kept) plus a root handler for everything else, each with
  the filter; pass it as ``uvicorn.Config(log_config=…)``.
* :func:`setup_logging` applies it (CLI commands).
* :func:`install_redaction` adds the filter to the handlers already configured (embedders
  that set up logging themselves).
"""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["redact", "RedactStreamTokens", "log_config", "setup_logging", "install_redaction"]

#: ``/stream/<carrier>/<call id>/``, the token segment (anything up to ``/ ? # " '`` or space),
#: any further path, and a query string (stream URLs have none; one may hold a token too).
_STREAM_PATH = re.compile(
    r"(?P<head>/stream/[^/\s?#\"']+/[^/\s?#\"']+/)[^/\s?#\"'\\]+(?P<rest>/[^\s?#\"']*)?(?P<query>\?[^\s#\"']*)?"
)
#: ``/webrtc/<call id>/``, a WebRTC offer URL's token segment, then ``/offer`` (as above).
_OFFER_PATH = re.compile(
    r"(?P<head>/webrtc/[^/\s?#\"']+/)[^/\s?#\"'\\]+(?P<rest>/[^\s?#\"']*)?(?P<query>\?[^\s#\"']*)?"
)
_MASK = "***"


def _mask(m: re.Match[str]) -> str:
    return m["head"] + _MASK + (m["rest"] or "") + ("?" + _MASK if m["query"] else "")
#: The uvicorn loggers whose records keep their ``args`` (their formatters unpack them).
_STRUCTURED = ("uvicorn.access",)


def redact(text: str) -> str:
    """``text`` with the token segment (and any query string) of every stream path and WebRTC
    offer path masked.

    ``GET /stream/twilio/call_1/AbC-xyz?t=AbC`` → ``GET /stream/twilio/call_1/***?***``;
    ``POST /webrtc/call_1/AbC-xyz/offer`` → ``POST /webrtc/call_1/***/offer``.
    """
    if "/stream/" in text:
        text = _STREAM_PATH.sub(_mask, text)
    if "/webrtc/" in text:
        text = _OFFER_PATH.sub(_mask, text)
    return text


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (int, float, bool, bytes)):
        return value
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - an object whose str() fails is left for logging to report
        return value
    return redact(text) if "/stream/" in text or "/webrtc/" in text else value


class RedactStreamTokens(logging.Filter):
    """Rewrite stream tokens out of a record (message, args, exception and stack text).

    Never drops a record. A token split across arguments (which no single rewrite catches) is
    caught by checking the formatted message; such a record is replaced by its redacted text
    (except for uvicorn's access records, whose arguments are each a whole field).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redact_arg(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: _redact_arg(v) for k, v in args.items()}
        if record.name not in _STRUCTURED:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string is logging's to report
                message = ""
            if redact(message) != message:
                record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


#: Loggers of the carriers' SDKs (and their HTTP clients) that write credentials at DEBUG.
_CREDENTIAL_LOGGERS = ("vonage", "vonage_http_client", "twilio", "twilio.http_client", "telnyx", "plivo",
                       "httpx", "httpcore")  # fmt: skip


def _at_least_info(level: str) -> str:
    return "INFO" if logging.getLevelName(level) == logging.DEBUG else level


#: aiortc's ICE agent logs each candidate pair's every state change at INFO: a few dozen lines
#: per call, thousands for an offer that names hundreds of candidates. Warnings unless DEBUG.
_ICE_LOGGERS = ("aioice",)


def _warnings_unless_debug(level: str) -> str:
    return level if logging.getLevelName(level) <= logging.DEBUG else max(level, "WARNING", key=logging.getLevelName)


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A ``dictConfig`` document for the gateway and uvicorn, every handler redacting tokens.

    Args:
        level: the root level (``DEBUG``, ``INFO``, ``WARNING`` …); uvicorn's loggers get it too.

    Returns:
        uvicorn's default configuration (``default`` handler on stderr, ``access`` on stdout)
        plus a root handler (stderr, ``time level logger message``), all with the filter.
    """
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact_stream_tokens": {"()": RedactStreamTokens}},
        "formatters": {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s",
                        "use_colors": None},
            "access": {"()": "uvicorn.logging.AccessFormatter",
                       "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'},
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        },  # fmt: skip
        "handlers": {
            "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                        "filters": ["redact_stream_tokens"]},
            "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                       "filters": ["redact_stream_tokens"]},
            "root": {"formatter": "plain", "class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                     "filters": ["redact_stream_tokens"]},
        },  # fmt: skip
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            # Carrier SDKs log request headers (credentials, signed JWTs) at DEBUG: never below INFO.
            **{name: {"level": _at_least_info(level)} for name in _CREDENTIAL_LOGGERS},
            **{name: {"level": _warnings_unless_debug(level)} for name in _ICE_LOGGERS},
        },
        "root": {"handlers": ["root"], "level": level},
    }


def setup_logging(level: str = "INFO") -> None:
    """Apply :func:`log_config` (replacing the root and uvicorn handlers)."""
    logging.config.dictConfig(log_config(level))


def install_redaction() -> int:
    """Add :class:`RedactStreamTokens` to every handler of the root and uvicorn loggers (and
    of the ``websockets`` loggers) that lacks one; return how many handlers got it."""
    added = 0
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.server")
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactStreamTokens) for f in handler.filters):
                handler.addFilter(RedactStreamTokens())
                added += 1
    return added
