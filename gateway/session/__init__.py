"""The call session: :class:`CallSession`, the one asyncio owner of a live call, and its parts.

Modules: :mod:`~gateway.session.call` (the owner), :mod:`~gateway.session.caller` (carrier audio
→ VAD and model), :mod:`~gateway.session.agent` (agent audio: policy gates, hold, stop, DTMF),
:mod:`~gateway.session.playout` (agent audio → paced carrier frames, heard ms),
:mod:`~gateway.session.turns` (transcript, barge-in cuts, latency),
:mod:`~gateway.session.policies` (the policy hooks and actions, timers),
:mod:`~gateway.session.control` (the app's hang-up and DTMF requests),
:mod:`~gateway.session.voicemail` (answering-machine detection and the voicemail action),
:mod:`~gateway.session.finish` (bounded close steps, close codes, the outcome) and
:mod:`~gateway.session.common` (the contracts they share).
"""

from gateway.session.call import CallSession
from gateway.session.common import CallHooks, CallOutcome, CallPolicy, Transport
from gateway.session.control import ControlBusy, ControlPolicy
from gateway.session.policies import (
    AudioGate, EndAfterPlayout, EndCall, MuteCaller, Note, PlayDtmf, Policy, ReleaseAudio, Say, StopAgentAudio,
    TimerPolicy,
)  # fmt: skip
from gateway.session.voicemail import VoicemailConfig, VoicemailPolicy

__all__ = [
    "CallSession", "CallPolicy", "Transport", "CallOutcome", "CallHooks",
    "Policy", "TimerPolicy", "AudioGate", "EndCall", "Say", "Note", "ReleaseAudio",
    "StopAgentAudio", "EndAfterPlayout", "PlayDtmf", "MuteCaller",
    "ControlBusy", "ControlPolicy", "VoicemailConfig", "VoicemailPolicy",
]  # fmt: skip
