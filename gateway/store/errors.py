"""Errors raised by the store.

Every error is a :class:`StoreError`. The stream-token errors share
:class:`StreamTokenError` and carry a short stable ``code`` a WebSocket handler can use as
its close reason (never echo the token itself).
"""

from __future__ import annotations

__all__ = [
    "StoreError",
    "UnknownCall",
    "UnknownAgent",
    "StreamTokenError",
    "BadToken",
    "TokenExpired",
    "CallNotConnectable",
]


class StoreError(Exception):
    """Base class of the store's errors."""

    code: str = "store_error"


class UnknownAgent(StoreError, LookupError):
    """No agent has this id."""

    code = "unknown_agent"

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"unknown agent {agent_id!r}")
        self.agent_id = agent_id


class StreamTokenError(StoreError):
    """The stream URL cannot be used to connect to this call (see the subclasses)."""

    code = "stream_refused"

    def __init__(self, call_id: str, message: str) -> None:
        super().__init__(f"call {call_id}: {message}")
        self.call_id = call_id


class UnknownCall(StreamTokenError, LookupError):
    """No call has this id (also raised outside stream checks, e.g. by ``finalise_call``)."""

    code = "unknown_call"

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id, "unknown call")


class BadToken(StreamTokenError):
    """The stream token does not match the call's."""

    code = "bad_token"

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id, "stream token does not match")


class TokenExpired(StreamTokenError):
    """The stream token was right but its time to live ran out before anyone connected."""

    code = "token_expired"

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id, "stream token expired")


class CallNotConnectable(StreamTokenError):
    """The call already started or ended; a stream URL connects once only.

    Attributes:
        status: the call's status (``in_progress``, ``completed``, …).
    """

    code = "call_not_connectable"

    def __init__(self, call_id: str, status: str) -> None:
        super().__init__(call_id, f"call is {status}; a stream URL connects only once")
        self.status = status
