"""Helpers every realtime bridge shares: secret redaction, the wire logger, heard transcripts.

Pure: no sockets, no asyncio.
"""

from __future__ import annotations

import logging

__all__ = ["WIRE_LOG", "redact", "cut_heard_text"]

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
