"""Helpers every realtime bridge shares: secret redaction, the wire logger, heard transcripts,
the call's tools.

Pure: no sockets, no asyncio (their shared socket code is :mod:`gateway.llm.ws_client`).
"""

from __future__ import annotations

import logging

from gateway.llm.base import AgentConfig, BridgeFailed
from gateway.llm.tools import ToolConfigError, ToolSpec, parse_tools

__all__ = ["WIRE_LOG", "redact", "cut_heard_text", "agent_tools"]

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


def cut_heard_text(text: str, heard_ms: int, total_ms: float) -> str:
    """The leading share of ``text`` a caller heard, cut at a word boundary.

    Speech rate is taken as constant over the item, so the words kept are
    ``floor(words * heard_ms / total_ms)``. A cut text ends with ``…``.

    Args:
        text: the full transcript of the item.
        heard_ms: whole ms of the item's audio the caller heard.
        total_ms: ms of audio the item delivered.

    Returns:
        ``text`` unchanged if all of it was heard; ``""`` if nothing was.
    """
    text = text.strip()
    if heard_ms <= 0:
        return ""
    if total_ms <= 0 or heard_ms >= total_ms:
        return text
    words = text.split()
    n = int(len(words) * heard_ms / total_ms)
    if n >= len(words):
        return text
    return (" ".join(words[:n]) + "…") if n else ""


def agent_tools(config: AgentConfig) -> list[ToolSpec]:
    """The call's tool declarations, checked and resolved against its secrets.

    Raises:
        BridgeFailed: ``tool_config``, naming what is wrong with a declaration.
    """
    try:
        return parse_tools(config.tools, config.secrets)
    except ToolConfigError as exc:
        raise BridgeFailed("tool_config", str(exc)) from None
