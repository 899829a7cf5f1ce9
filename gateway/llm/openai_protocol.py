"""OpenAI Realtime (GA) client protocol, sans-I/O: client events out, typed events in.

:class:`RealtimeProtocol` is the state machine, as python-websockets' ``protocol.py``: client
commands (``session_update``, ``append_audio``, ``end_of_turn``, ``interrupt``,
``tool_output`` …) append client events (dicts) to an outbox read by
:meth:`RealtimeProtocol.data_to_send`; :meth:`RealtimeProtocol.receive` parses one server event
into typed :mod:`gateway.llm.base` events and keeps the state barge-in needs: the response in
progress, every assistant audio item with the ms of audio it delivered, and the transcripts,
released in conversation order once final. No sockets, no asyncio:
:class:`gateway.llm.openai_realtime.OpenAIRealtimeBridge` does the I/O.

Wire protocol: platform.openai.com/docs/guides/realtime (GA, no ``OpenAI-Beta`` header);
client events ``session.update``, ``input_audio_buffer.append|commit``, ``response.create``,
``response.cancel``, ``conversation.item.create|truncate|delete``. Beta server event names
(``response.audio.delta`` …) are accepted as aliases of the GA ones.

Barge-in (:meth:`RealtimeProtocol.interrupt`): ``response.cancel`` (the error
``response_cancel_not_active`` is normal), then ``conversation.item.truncate`` of the item the
caller was hearing at the whole ms heard, clamped to the ms of audio received for it, or
``conversation.item.delete`` when nothing was heard; later audio items of that response, never
heard, are deleted.

Server turn modes (``server_vad`` / ``semantic_vad``): the server's VAD never interrupts the
reply (``interrupt_response: false``): it hears the raw caller leg, the agent's echo and
backchannels included, and barge-in is the gateway's (its echo-aware VAD, pause-then-commit),
carried out by :meth:`RealtimeProtocol.interrupt` as in gateway turn mode. When the gateway owns
barge-in (an interruptible call, :attr:`RealtimeProtocol.holds_turns`) the server does not
answer either (``create_response: false``): each user turn it commits
(``input_audio_buffer.committed``) is answered with ``response.create`` by the protocol, at once
when no pause is pending, or held until the gateway's verdict
(:meth:`~gateway.llm.openai_commands.RealtimeCommands.turn_verdict`) and then answered or, for
a backchannel that resumed, deleted (``conversation.item.delete``; its transcript dropped).
xAI takes only ``{"type": "server_vad"}``: its server answers and interrupts on its own.

Transcripts are released in conversation order (an agent item waits for the caller's
transcript before it, which OpenAI delivers late), each once its response is done. An agent
transcript released after :meth:`RealtimeProtocol.interrupt` is cut to the share of its audio
the caller heard (at a word boundary) and ends with ``…``; one released before was whole when
released, and the session cuts its stored copy on barge-in.

``response.done`` yields one :class:`ResponseDone` per audio item of the response
(``response_id`` = the item id, the unit of :class:`AudioOut`), then one for the response
itself (the server's response id), so a consumer keyed by either sees the end.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from gateway.formats import AudioFormat
from gateway.llm.base import AgentConfig, BridgeEvent, holds_server_turns
from gateway.llm.openai_backends import RealtimeBackend
# Client commands live in gateway.llm.openai_commands, server events and their state in
# gateway.llm.openai_events; the module-level names of the pre-split module stay importable here.
from gateway.llm.openai_commands import _MIN_COMMIT_MS, RealtimeCommands  # noqa: F401
from gateway.llm.openai_events import (  # noqa: F401
    _BEST_EFFORT,
    _FATAL_CODES,
    _FATAL_TYPES,
    _IGNORED,
    _UNSUPPORTED_HINTS,
    ALIASES,
    AUTH_HINTS,
    RealtimeEvents,
    _Entry,
    _Item,
    log,
)
from gateway.llm.openai_history import RealtimeHandover, Turn
from gateway.llm.tools import ToolCall, ToolSpec

__all__ = ["RealtimeProtocol", "ALIASES", "AUTH_HINTS"]



class RealtimeProtocol(RealtimeCommands, RealtimeEvents, RealtimeHandover):
    """Sans-I/O OpenAI Realtime client state machine (no sockets, no asyncio).

    One instance per model session; a call that outlives its session (or its socket) moves to
    a new instance with :meth:`~RealtimeHandover.carry_from` (:mod:`gateway.llm.openai_history`).

    Args:
        backend: the server and its switches.
        config: the call's agent configuration.
        wire_format: the ``audio.*.format`` object sent in ``session.update``.
        audio_format: the same as an :class:`AudioFormat` (for ms accounting).
        tools: declared tools.
        replay_limit_bytes: caller audio kept per turn for a replay into the next session.
    """

    def __init__(
        self,
        backend: RealtimeBackend,
        config: AgentConfig,
        *,
        wire_format: dict[str, Any],
        audio_format: AudioFormat,
        tools: Sequence[ToolSpec] = (),
        replay_limit_bytes: int = 1 << 20,
    ) -> None:
        self.backend = backend
        self.config = config
        self.audio_format = audio_format
        self.supports_truncate = backend.supports_truncate
        self.supports_cancel = backend.supports_cancel
        self.session_ready = False
        self.response_id: str | None = None
        self.unhandled = 0
        self._wire_format = wire_format
        self._tools = list(tools)
        self._outbox: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._sent: OrderedDict[str, str] = OrderedDict()  # event_id -> type
        self._items: dict[str, _Item] = {}
        self._audio_order: list[str] = []
        self._muted: set[str] = set()
        self._queue: deque[_Entry] = deque()
        self._user_items: set[str] = set()
        self._tool_requests: list[ToolCall] = []
        self._calls_seen: set[str] = set()
        self._calls_running: set[str] = set()
        self._outputs_waiting = False
        self._response_wanted = False
        self._create_pending = False  # a response.create not yet answered by response.created
        self._server_reply_expected = False  # the server's VAD ended a turn: its reply is due
        self._say_wanted = ""  # instructions of a say() waiting for the running response
        self._init_held_turns()
        self._uncommitted_bytes = 0
        # Carry-over (RealtimeHandover): the conversation so far, caller speech, turn audio.
        self.history: list[Turn] = []
        self.caller_speaking = False
        self.replay_limit_bytes = replay_limit_bytes
        self._carried: dict[str, Turn] = {}
        self._turn_audio: deque[bytes] = deque()
        self._turn_audio_bytes = 0
        self._last_turn_audio: list[bytes] = []
        self._user_missing = False
        self.replayed_bytes = 0  # caller audio carry_from sent again
        self._handlers: dict[str, Callable[[dict[str, Any]], list[BridgeEvent]]] = {
            "session.updated": self._on_session_updated,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "input_audio_buffer.committed": self._on_committed,
            "conversation.item.added": self._on_item_added,
            "conversation.item.input_audio_transcription.completed": self._on_user_transcript,
            "conversation.item.input_audio_transcription.failed": self._on_user_failed,
            "response.created": self._on_response_created,
            "response.output_item.added": self._on_output_item,
            "response.output_audio.delta": self._on_audio_delta,
            "response.output_audio_transcript.delta": self._on_transcript_delta,
            "response.output_audio_transcript.done": self._on_transcript_done,
            "response.function_call_arguments.done": self._on_call_arguments,
            "response.done": self._on_response_done,
            "error": self._on_error,
        }

    def _init_held_turns(self) -> None:
        """Server turns held for the gateway's verdict (:meth:`RealtimeCommands.turn_verdict`)."""
        self.holds_turns = holds_server_turns(self.config) and self.backend.session_style != "xai"
        self._gate_pending = False  # the gateway's pause is undecided
        self._server_turn_open = False  # the server's VAD heard a start, no commit yet
        self._backchannel = False  # that open server turn was judged a backchannel
        self._unheard = False  # that open server turn began over agent audio, no caller heard
        self._held_users: list[str] = []  # committed user items waiting for the verdict
        self._dropped_users: set[str] = set()  # backchannel items deleted (transcripts ignored)
