"""The local agent: responders over a real loopback HTTP server, sentence splitting, and the
conversation history cut to what the caller heard on barge-in."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.formats import PCMU_8K
from gateway.llm.base import AgentConfig, AudioOut, ResponseDone, Transcript
from gateway.llm.common import cut_heard
from gateway.llm.local.agent import HISTORY_LIMIT_CHARS, LocalAgentBridge, bound_history, split_sentences
from gateway.llm.local.responder import ChatCompletionsResponder, EchoResponder


@pytest.fixture
async def chat_server():
    """An OpenAI-compatible /v1/chat/completions on loopback; records requests."""
    seen: list[dict] = []
    mode = {"status": 200}

    async def completions(request: Request):
        seen.append({"body": await request.json(), "auth": request.headers.get("authorization")})
        if mode["status"] != 200:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=mode["status"])
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": " Sure, ten of clubs. "}}]})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])]),
                                           host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1", seen, mode
    server.should_exit = True
    await task


async def test_chat_completions_responder_sends_history_and_returns_the_reply(chat_server):
    url, seen, _ = chat_server
    r = ChatCompletionsResponder(url, model="llama3.2", api_key="local-key", temperature=0.3)
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ten of clubs"}]
    assert await r.reply(history) == "Sure, ten of clubs."
    assert seen[0]["body"] == {"model": "llama3.2", "messages": history, "temperature": 0.3}
    assert seen[0]["auth"] == "Bearer local-key"
    await r.aclose()


async def test_chat_completions_failure_gives_the_apology_not_an_exception(chat_server, caplog):
    url, _, mode = chat_server
    mode["status"] = 503
    r = ChatCompletionsResponder(url, model="m", api_key="secret-key-123")
    assert await r.reply([{"role": "user", "content": "hi"}]) == "Sorry, I am having trouble answering right now."
    assert "secret-key-123" not in caplog.text
    r2 = ChatCompletionsResponder("http://127.0.0.1:9/v1", model="m", timeout_s=2)
    assert (await r2.reply([{"role": "user", "content": "hi"}])).startswith("Sorry")
    await r.aclose(), await r2.aclose()


async def test_echo_responder_is_a_named_diagnostic():
    r = EchoResponder()
    assert "diagnostic" in r.name
    assert await r.reply([{"role": "user", "content": "go forward"}]) == "I heard you say: go forward."
    assert (await r.reply([{"role": "user", "content": " "}])).startswith("Sorry")


def test_sentences_split_at_clause_ends_and_heard_text_is_cut():
    assert split_sentences("I heard you say: go forward. Anything else?  Bye") == [
        "I heard you say:", "go forward.", "Anything else?", "Bye"]
    spoken = [("One two three four.", 1000), ("Five six.", 500)]
    assert cut_heard(spoken, 0, suffix="") == ""
    assert cut_heard(spoken, 500, suffix="") == "One two"
    assert cut_heard(spoken, 1000, suffix="") == "One two three four."
    assert cut_heard(spoken, 1250, suffix="") == "One two three four. Five"
    assert cut_heard(spoken, 10_000, suffix="") == "One two three four. Five six."
    # The realtime bridges' form marks a cut; a whole reply is left as it is.
    assert cut_heard(spoken, 1250) == "One two three four. Five…"
    assert cut_heard(spoken, 1000) == "One two three four.…"
    assert cut_heard(spoken, 1500) == "One two three four. Five six."
    assert cut_heard([("no audio measured", 0)], 0) == "no audio measured"  # nothing to cut by


class _Scripted:
    name = "scripted"

    def __init__(self) -> None:
        self.histories: list[list[dict]] = []

    async def reply(self, history):
        self.histories.append([dict(m) for m in history])
        return "Thanks."

    async def aclose(self):
        return None


async def test_barge_in_cuts_the_agents_memory_to_what_was_heard(local_engines):
    responder = _Scripted()
    bridge = LocalAgentBridge(engines=local_engines, responder=responder)
    await bridge.start(AgentConfig(greeting="One two three four five six seven eight. Nine ten."), PCMU_8K)
    events = bridge.events()
    first = await anext(events)
    assert isinstance(first, Transcript) and first.role == "agent"
    audio = await anext(events)
    assert isinstance(audio, AudioOut) and audio.item_id == first.item_id
    ms = len(audio.audio) // 2 * 1000 // bridge.output_format.sample_rate
    await bridge.interrupt(first.item_id, ms // 2)  # the caller heard half the first sentence
    # The transcript went out before the reply's audio was all made: a correction follows,
    # the text the caller heard, then the end of the item.
    correction = await anext(events)
    assert isinstance(correction, Transcript) and correction.item_id == first.item_id
    assert correction.text in ("One two three four", "One two three", "One two three four five")
    done = await anext(events)
    assert isinstance(done, ResponseDone) and done.status == "cancelled"
    await bridge.say("Sure.")  # the next reply sees the cut history
    history = bridge._history
    assert history[1] == {"role": "assistant", "content": correction.text}
    await bridge.close()


class _ScriptedEngines:
    """A stand-in for the engine pool where the audio does not matter: each utterance is
    "recognised" as the next scripted text, and each sentence is spoken as 100 ms of silence
    (so heard milliseconds map to whole sentences)."""

    sample_rate = 22050

    def __init__(self) -> None:
        self.texts: list[str] = []

    def begin(self, band: str):
        text = self.texts.pop(0)

        class _Turn:
            def feed(self, pcm: bytes) -> None:
                return None

            async def finish(self) -> str:
                return text

            def abort(self) -> None:
                return None

        return _Turn()

    async def synthesize(self, sentence: str) -> bytes:
        return bytes(2 * self.sample_rate // 10)


class _Long(_Scripted):
    async def reply(self, history):
        self.histories.append([dict(m) for m in history])
        return f"Reply {len(self.histories)}. " + "All right, noted. " * 16


async def _until_done(events) -> list:
    seen = []
    async with asyncio.timeout(10):
        while not seen or not isinstance(seen[-1], ResponseDone):
            seen.append(await anext(events))
    return seen


async def _caller_says(bridge: LocalAgentBridge, engines: _ScriptedEngines, text: str) -> None:
    engines.texts.append(text)
    await bridge.speech_started()
    await bridge.end_of_turn()


async def test_a_long_call_keeps_the_history_within_its_budget_system_prompt_first():
    engines, responder = _ScriptedEngines(), _Long()
    bridge = LocalAgentBridge(engines=engines, responder=responder)
    await bridge.start(AgentConfig(system_prompt="You are a card dealer. Be brief.", greeting=""), PCMU_8K)
    events = bridge.events()
    for turn in range(500):
        await _caller_says(bridge, engines, f"turn {turn}: " + "please deal me another card now " * 10)
        await _until_done(events)
    sizes = [sum(len(m["content"]) for m in h) for h in responder.histories]
    assert len(responder.histories) == 500 and sum(len(m["content"]) for m in responder.histories[-1]) > 0
    assert max(sizes) <= HISTORY_LIMIT_CHARS < 500 * 600  # the whole call would not fit
    last = responder.histories[-1]
    assert last[0] == {"role": "system", "content": "You are a card dealer. Be brief."}
    assert last[-1]["content"].startswith("turn 499:") and not any(m["content"].startswith("turn 0:") for m in last)
    assert sum(len(m["content"]) for m in bridge._history) <= HISTORY_LIMIT_CHARS
    assert len(bridge._spoken) <= len(bridge._history)  # the items trimmed away are forgotten too
    await bridge.close()


async def test_a_cut_reaches_its_own_items_message_after_others_were_removed_or_trimmed():
    engines = _ScriptedEngines()
    bridge = LocalAgentBridge(engines=engines, responder=_Scripted())
    await bridge.start(AgentConfig(greeting="One two three. Four five six."), PCMU_8K)
    events = bridge.events()
    seen = await _until_done(events)
    item1 = seen[0].item_id
    assert [type(e) for e in seen] == [Transcript, AudioOut, AudioOut, ResponseDone]  # whole: no correction
    await bridge.interrupt(item1, 0)  # the caller heard none of item 1: it leaves the history
    await bridge.say("Seven eight nine. Ten eleven.")
    item2 = (await _until_done(events))[0].item_id
    await bridge.interrupt(item1, 10_000)  # a late cut of item 1 must not touch item 2's message
    assert bridge._history[1:] == [{"role": "assistant", "content": "Seven eight nine. Ten eleven."}]
    await bridge.interrupt(item2, 100)
    assert bridge._history[1:] == [{"role": "assistant", "content": "Seven eight nine."}]
    await bridge.close()

    # Trimming the oldest message shifts every later one: item 1's cut still finds item 1.
    bridge = LocalAgentBridge(engines=engines, responder=_Scripted(), history_limit_chars=120)
    await bridge.start(AgentConfig(system_prompt="Deal.", greeting=""), PCMU_8K)
    events = bridge.events()
    await _caller_says(bridge, engines, "x" * 60)
    seen = await _until_done(events)
    item1 = seen[1].item_id  # after the caller's transcript: "Thanks."
    await bridge.say("Seven eight nine. Ten eleven.")
    await _until_done(events)
    await bridge.say("Twelve thirteen. Fourteen.")  # pushes the caller's 60 characters out
    item3 = (await _until_done(events))[0].item_id
    assert [m["content"] for m in bridge._history] == ["Deal.", "Thanks.", "Seven eight nine. Ten eleven.",
                                                       "Twelve thirteen. Fourteen."]
    await bridge.interrupt(item3, 100)
    await bridge.interrupt(item1, 0)
    assert [m["content"] for m in bridge._history] == ["Deal.", "Seven eight nine. Ten eleven.", "Twelve thirteen."]
    await bridge.close()


class _SlowEngines(_ScriptedEngines):
    """Each sentence takes a while to synthesise (as Piper does under load)."""

    async def synthesize(self, sentence: str) -> bytes:
        await asyncio.sleep(0.05)
        return await super().synthesize(sentence)


async def test_a_reply_cut_while_it_is_still_being_synthesised_sends_a_corrected_transcript():
    bridge = LocalAgentBridge(engines=_SlowEngines(), responder=_Scripted())
    await bridge.start(AgentConfig(greeting="One two three. Four five six. Seven eight nine."), PCMU_8K)
    events = bridge.events()
    first = await anext(events)
    assert isinstance(first, Transcript) and first.text == "One two three. Four five six. Seven eight nine."
    assert isinstance(await anext(events), AudioOut)  # sentence 1 (100 ms); sentence 2 is being made
    await bridge.interrupt(first.item_id, 100)  # the caller heard sentence 1 whole, no more
    rest = await _until_done(events)
    assert [type(e) for e in rest] == [Transcript, ResponseDone] and rest[-1].status == "cancelled"
    assert rest[0].item_id == first.item_id and rest[0].text == "One two three."
    await bridge.close()

    # A synthesis failure mid-reply corrects the transcript to the sentences spoken.
    class _Failing(_ScriptedEngines):
        async def synthesize(self, sentence: str) -> bytes:
            if sentence.startswith("Four"):
                from gateway.llm.local.remote import EngineError
                raise EngineError("tts down")
            return await super().synthesize(sentence)

    bridge = LocalAgentBridge(engines=_Failing(), responder=_Scripted())
    await bridge.start(AgentConfig(greeting="One two three. Four five six."), PCMU_8K)
    seen = await _until_done(bridge.events())
    texts = [e.text for e in seen if isinstance(e, Transcript)]
    assert texts == ["One two three. Four five six.", "One two three."] and seen[-1].status == "failed"
    await bridge.close()


def test_bound_history_keeps_the_system_prompt_and_the_newest_message():
    system = {"role": "system", "content": "s" * 10}
    msgs = [system] + [{"role": "user", "content": str(i) * 10} for i in range(10)]
    kept = bound_history(msgs, 35)
    assert kept[0] is system and [m["content"][0] for m in kept[1:]] == ["8", "9"]
    assert bound_history(msgs, 5) == [system, msgs[-1]]  # over budget: still something to answer
    assert bound_history(msgs[:1], 5) == [system]
