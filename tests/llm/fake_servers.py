"""Loopback servers speaking the OpenAI Realtime and Gemini Live wire protocols.

Kept so ``from tests.llm.fake_servers import …`` goes on working; the code lives in
:mod:`tests.llm.fake_openai` (OpenAI Realtime), :mod:`tests.llm.fake_gemini` (Gemini Live) and
:mod:`tests.llm.fake_common` (recorded speech, the shared server base, the bridge-side
:class:`Collector`).

Both are real ``websockets`` servers on 127.0.0.1 that check the handshake (path and key header
as the vendors do), record every client message, and answer with scripted replies whose audio
is real recorded speech from ``../shared/audio`` streamed as deltas. They keep the server-side
state a bridge must stay in step with: the audio sent per item (truncate bounds), the active
response (cancel), the resumption handles and the caller audio each handle's state contains.
"""

from __future__ import annotations

from tests.llm.fake_common import SERVER_LOG, Collector, _Recorder, encode, speech, transcript_of
from tests.llm.fake_gemini import GEMINI_PATH, FakeLiveServer, _LiveSession
from tests.llm.fake_openai import _BETA, FakeRealtimeServer, Reply, Say

__all__ = [
    "GEMINI_PATH",
    "SERVER_LOG",
    "Collector",
    "FakeLiveServer",
    "FakeRealtimeServer",
    "Reply",
    "Say",
    "_BETA",
    "_LiveSession",
    "_Recorder",
    "encode",
    "speech",
    "transcript_of",
]
