"""Simulated carrier REST APIs that play the callee of each outbound call (see :mod:`.base`)."""

from gateway.simulator.carrier_api.base import Callback, CarrierSimulator, SimCall
from gateway.simulator.carrier_api.scripts import (
    ApiFault,
    CalleeScript,
    ScriptBook,
    line_from_wav,
    person,
    screening,
    simple,
    synth_speech,
    tone,
    voicemail,
)

__all__ = [
    "ApiFault",
    "Callback",
    "CalleeScript",
    "CarrierSimulator",
    "ScriptBook",
    "SimCall",
    "line_from_wav",
    "person",
    "screening",
    "simple",
    "synth_speech",
    "tone",
    "voicemail",
]
