"""Helpers every realtime bridge shares: secret redaction, the wire logger, heard transcripts,
the call's tools.

Pure: no sockets, no asyncio (their shared socket code is :mod:`gateway.llm.ws_client`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.llm.base import AgentConfig, BridgeFailed
from gateway.llm.tools import ToolConfigError, ToolSpec, parse_tools

__all__ = ["WIRE_LOG", "redact", "cut_heard", "cut_heard_text", "agent_tools"]

_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-goog-api-key", "proxy-authorization"})


class _RedactSecretHeaders(logging.Filter):
    """Blank credential header values in ``websockets``' debug handshake logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0].lower() in _SECRET_HEADERS
        ):
            record.args = (args[0], "***")
        return True


#: Logger handed to ``websockets.connect``: its DEBUG handshake dump would otherwise print the
#: ``Authorization`` / ``api-key`` / ``x-goog-api-key`` headers in clear.
WIRE_LOG = logging.getLogger("gateway.llm.wire")
WIRE_LOG.addFilter(_RedactSecretHeaders())


def redact(text: str, *secrets: str) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def cut_heard(segments: Sequence[tuple[str, float]], heard_ms: float, *, suffix: str = "…") -> str:
    """The words of an agent reply the caller heard, cut at a word boundary.

    The one implementation of "cut to what was heard" (the realtime bridges' late transcripts,
    the local agent's memory, the session's record). A reply is a list of segments played one
    after the other (the local agent's sentences; a single segment for a whole item). Speech
    rate is taken as constant within a segment, so of a segment heard in part the words kept
    are ``floor(words * heard / segment_ms)``.

    Args:
        segments: ``(text, ms of its audio)`` in the order played.
        heard_ms: ms of the reply's audio the caller heard (from mark acknowledgements).
        suffix: appended when words were cut off and some were kept (``""``: none).

    Returns:
        The whole texts heard, then the heard share of the segment in progress, joined by
        single spaces; every text unchanged (stripped) if all was heard, or if no segment has
        measured audio (nothing to cut by); ``""`` if nothing was heard.
    """
    texts = [(text.strip(), ms) for text, ms in segments]
    if sum(max(0.0, ms) for _, ms in texts) <= 0:
        return " ".join(t for t, _ in texts if t)
    if heard_ms <= 0:
        return ""
    kept: list[str] = []
    left = heard_ms
    cut = False
    for text, ms in texts:
        if left >= ms:
            if text:
                kept.append(text)
            left -= max(0.0, ms)
            continue
        words = text.split()
        n = int(len(words) * left / ms)
        if n:
            kept.append(" ".join(words[:n]))
        cut = True
        break
    out = " ".join(kept)
    return out + suffix if cut and out else out


def cut_heard_text(text: str, heard_ms: float, total_ms: float) -> str:
    """:func:`cut_heard` of one item: ``text`` whose audio lasted ``total_ms``; a cut ends in ``…``."""
    return cut_heard([(text, total_ms)], heard_ms)


def agent_tools(config: AgentConfig) -> list[ToolSpec]:
    """The call's tool declarations, checked and resolved against its secrets.

    Raises:
        BridgeFailed: ``tool_config``, naming what is wrong with a declaration.
    """
    try:
        return parse_tools(config.tools, config.secrets)
    except ToolConfigError as exc:
        raise BridgeFailed("tool_config", str(exc)) from None
