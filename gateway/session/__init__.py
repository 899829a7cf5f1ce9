"""The call session: :class:`CallSession`, the one asyncio owner of a live call, and its parts.

Modules: :mod:`~gateway.session.call` (the owner), :mod:`~gateway.session.caller` (carrier audio
→ VAD and model), :mod:`~gateway.session.playout` (agent audio → paced carrier frames, heard
ms), :mod:`~gateway.session.turns` (transcript, barge-in cuts, latency),
:mod:`~gateway.session.policies` (timers and the hooks for the next policies),
:mod:`~gateway.session.finish` (bounded close steps, close codes, the outcome) and
:mod:`~gateway.session.common` (the contracts they share).
"""

from gateway.session.call import CallSession
from gateway.session.common import CallHooks, CallOutcome, CallPolicy, Transport
from gateway.session.policies import AudioGate, EndCall, Note, Policy, ReleaseAudio, Say, TimerPolicy

__all__ = [
    "CallSession", "CallPolicy", "Transport", "CallOutcome", "CallHooks",
    "Policy", "TimerPolicy", "AudioGate", "EndCall", "Say", "Note", "ReleaseAudio",
]  # fmt: skip
