"""A playground call in a real Chromium, through the page's own controls, to the local agent.

The fake microphone plays a real recording (``speech/goforward.wav``, "go forward ten meters")
followed by 3 s of silence, looped by Chromium. The test keeps the page's microphone muted
(the page's Mute button: ``track.enabled = false``) except for one pass of the recording, which
it starts in a silence gap while the agent speaks its greeting: that is a barge-in (the call is
interruptible) and then the caller's turn. The page's browser audio processing (echo
cancellation, noise suppression, gain control) is switched off, as with headphones: no
loudspeaker plays into the fake microphone, and Chromium's echo canceller, given the agent's
audio as its reference, otherwise suppresses the caller's first words while the agent talks.
Measured in the page, on its clock (``performance.now()``), with WebAudio analysers the test adds
to the page's streams:

* the fake microphone's own signal (a clone of the track that is never muted: where the recording
  is), what the page sends (the muted or unmuted track) and what it receives (the agent's track);
* agent audio arrived: the remote analyser above a floor for a while;
* barge-in: the sent track's onset → the start of the remote track's silence, at most 300 ms;

then the transcript the page shows (the recognised words, the agent's answer with its latency),
the call record (completed, interrupted greeting, the caller's words, the recording) and the
recording in the page's ``<audio>`` from a blob URL. A screenshot of the page during the call
goes to ``artifacts/playground-call.png``.
"""

from __future__ import annotations

import asyncio
import re
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import expect

from tests.conftest import ROOT, load_wav

pytestmark = [pytest.mark.slow, pytest.mark.solo, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

RECORDING = "speech/goforward.wav"
GAP_S = 3.0  # silence after the recording in the looped capture file
#: Long, and with no sentence breaks: the agent is still speaking when the recording comes round.
GREETING = ("Hello and welcome to the gateway playground where you can talk to the local agent from your "
            "browser and hear it answer you in real time without any phone line at all so go ahead and say "
            "something whenever you like and I will repeat what I heard")  # fmt: skip
VOICED = 0.01  # RMS (full scale 1.0) above which the microphone is playing the recording
AGENT_FLOOR = 0.003  # RMS above which agent audio is arriving
#: The agent's audio has stopped once it stays below the floor this long: longer than any gap
#: between its words, shorter than the caller's turn (the silence after a barge-in).
QUIET_MS = 1000
BARGE_IN_STOP_MS = 300  # the bound: caller onset → agent silence at the page
#: Chromium's receive jitter buffer on loopback with ``jitterBufferTarget`` 0: ~55 ms, at most
#: this (ms); a hold beyond it is discounted from the stop time (the browser's, not the gateway's).
JITTER_USUAL_MS = 100.0
SCREENSHOT = ROOT / "artifacts" / "playground-call.png"

#: Analysers on the page's streams, sampled every 5 ms: ``window.__levels.samples`` rows of
#: ``[performance.now() ms, capture RMS, sent RMS, received RMS]``; and the agent states the page
#: shows, as they change: ``window.__levels.states`` rows of ``[performance.now() ms, state]``.
INSTALL_LEVELS = """() => {
  const pg = window.playground;
  const ctx = new AudioContext();
  const node = (stream) => {
    const a = ctx.createAnalyser();
    a.fftSize = 256;
    ctx.createMediaStreamSource(stream).connect(a);
    return a;
  };
  const raw = pg.localStream.getAudioTracks()[0].clone();
  raw.enabled = true;
  const nodes = [node(new MediaStream([raw])), node(pg.localStream), node(pg.remoteStream)];
  const buf = new Float32Array(256);
  const rms = (a) => {
    a.getFloatTimeDomainData(buf);
    let s = 0;
    for (const x of buf) s += x * x;
    return Math.sqrt(s / buf.length);
  };
  const levels = (window.__levels = { samples: [], raw, ctx, states: [] });
  const state = document.querySelector("#state");
  new MutationObserver(() => levels.states.push([performance.now(), state.textContent]))
    .observe(state, { childList: true, characterData: true, subtree: true });
  levels.timer = setInterval(() => levels.samples.push([performance.now(), ...nodes.map(rms)]), 5);
  return ctx.state;
}"""


@pytest.fixture(scope="module")
def capture_wav(shared_audio: Path, tmp_path_factory) -> Path:
    """The real recording followed by :data:`GAP_S` of silence (16-bit PCM), for the fake microphone."""
    pcm, rate = load_wav(shared_audio / RECORDING)
    out = tmp_path_factory.mktemp("capture") / "goforward-gap.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate([pcm, np.zeros(int(GAP_S * rate), np.int16)]).tobytes())
    return out


async def until(page, js: str, *, timeout_s: float, what: str, arg=None, every_s: float = 0.05):
    """Evaluate ``js`` in the page every ``every_s`` until it returns something truthy (that value).

    The gateway shares this test's event loop: around the barge-in the test polls seldom, so the
    measurement (in the page, on its own clock) does not compete with the call's media."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await page.evaluate(js, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


#: ms since the capture last played the recording (null: not seen yet).
SINCE_VOICED = """() => {
  const s = window.__levels.samples;
  for (let i = s.length - 1; i >= 0; i--) if (s[i][1] > %f) return [s[s.length - 1][0] - s[i][0], s[s.length - 1][0]];
  return null;
}""" % VOICED

#: Chromium's receive jitter buffer so far: ``[total delay s, samples emitted]`` (inbound-rtp).
JITTER = """async () => {
  let out = null;
  (await window.playground.peerConnection.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") out = [r.jitterBufferDelay, r.jitterBufferEmittedCount];
  });
  return out;
}"""

#: How long (ms) the agent's audio has been above the floor, in total.
AGENT_MS = """() => window.__levels.samples.filter((r) => r[3] > %f).length * 5""" % AGENT_FLOOR

#: The sent track's first voiced sample after time ``t`` (ms), with the agent's loudest in the 400 ms
#: before it (the onset may fall in a gap between two of the agent's words).
ONSET_AFTER = """(t) => {
  const s = window.__levels.samples;
  for (let i = 0; i < s.length; i++) {
    if (s[i][0] > t && s[i][2] > %f) {
      const before = (ms) => Math.max(...s.filter((r) => r[0] > s[i][0] - ms && r[0] <= s[i][0]).map((r) => r[3]));
      return { t: s[i][0], agentBefore: before(400) };
    }
  }
  return null;
}""" % VOICED

#: The start (ms) of the first run of received silence after ``t`` lasting QUIET_MS, once it has.
SILENCE_AFTER = """(t) => {
  const s = window.__levels.samples;
  let start = null;
  for (const r of s) {
    if (r[0] <= t) continue;
    if (r[3] > %f) start = null;
    else if (start === null) start = r[0];
    else if (r[0] - start >= %d) return start;
  }
  return null;
}""" % (AGENT_FLOOR, QUIET_MS)


async def test_a_playground_call_with_barge_in(page, served) -> None:
    started = time.monotonic()
    await page.fill("#apiKey", served.key)
    await page.fill("#greeting", GREETING)
    assert await page.is_checked("#interruptible")
    await page.uncheck("#processing")  # no loudspeaker echo to cancel: the recording goes as it is
    await page.click("#mute")  # muted from the start: the recording plays only when the test says
    await page.click("#call")
    await expect(page.locator("#callId")).to_have_text(re.compile(r"^call_"))
    call_id = await page.text_content("#callId")
    await until(page, "() => !!(window.playground.remoteStream && window.playground.localStream)",
                timeout_s=20, what="the agent's audio track")  # fmt: skip
    assert await page.evaluate(INSTALL_LEVELS) == "running"

    # the greeting arrives: agent audio at the page, and the agent is "speaking"
    await until(page, AGENT_MS + " >= 300", timeout_s=20, what="300 ms of agent audio at the page")
    await expect(page.locator("#state")).to_have_text("speaking")

    # unmute in a silence gap of the capture: the next pass of the recording talks over the agent
    await until(page, f"() => {{ const v = ({SINCE_VOICED})(); return v && v[0] > 300 && v[0] < 1500; }}",
                timeout_s=10, what="a silence gap in the capture")  # fmt: skip
    unmuted_at = await page.evaluate("performance.now()")
    jitter_before = await page.evaluate(JITTER)
    await page.click("#mute")
    onset = await until(page, ONSET_AFTER, arg=unmuted_at, timeout_s=GAP_S + 2, what="the caller's onset", every_s=0.25)
    assert onset["agentBefore"] > AGENT_FLOOR, "the agent had stopped before the caller spoke (greeting too short?)"
    await asyncio.sleep(QUIET_MS / 1000 + 0.3)
    stopped = await until(page, SILENCE_AFTER, arg=onset["t"], timeout_s=5, what="the agent's audio to stop", every_s=0.25)
    stop_ms = stopped - onset["t"]
    jitter_after = await page.evaluate(JITTER)
    states = await page.evaluate("window.__levels.states")
    told_ms = next((t - onset["t"] for t, name in states if name == "interrupted" and t > onset["t"]), None)
    assert told_ms is not None, states  # the page was told of the barge-in (the data channel's state)
    buffered_ms = 1000 * (jitter_after[0] - jitter_before[0]) / max(1, jitter_after[1] - jitter_before[1])
    await expect(page.locator("#state")).to_have_text(re.compile("interrupted|listening"))

    # the caller's turn: one pass of the recording, then muted again before the next one
    await until(page, f"() => {{ const v = ({SINCE_VOICED})(); return v && v[1] > {onset['t'] + 1500} && v[0] > 300; }}",
                timeout_s=10, what="the end of the recording")  # fmt: skip
    await page.click("#mute")
    user = page.locator('#transcript li[data-role="user"]')
    await expect(user.first).to_contain_text("forward", timeout=20_000)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # the echo agent answers with what it heard; the page shows the turn's latency
    answer = page.locator('#transcript li[data-role="agent"][data-latency-ms]').last
    await expect(answer).to_contain_text("forward", timeout=20_000)
    latency_ms = int(await answer.get_attribute("data-latency-ms"))
    answered_at = await page.evaluate("performance.now()")
    await until(page, SILENCE_AFTER, arg=answered_at, timeout_s=25, what="the end of the answer")
    await expect(page.locator("#state")).to_have_text("listening")
    roles = await page.eval_on_selector_all("#transcript li", "(items) => items.map((li) => li.dataset.role)")
    assert roles == ["agent", "user", "agent"], roles
    assert "barge_in" in await page.text_content("#events")  # the call's journal, live
    user_text = await user.first.text_content()
    # a stop before the page was told of the barge-in: the agent was between two words then (its
    # audio paused on its own and the barge-in kept it from resuming): true, but a lucky figure
    lucky = stop_ms < told_ms
    in_gap = " (in a gap between the agent's words)" if lucky else ""
    print(f"\nbarge-in stop at the page: {stop_ms:.0f} ms{in_gap} (Chromium's jitter buffer held {buffered_ms:.0f} ms;"
          f" the page was told {told_ms:.0f} ms after the onset); turn latency {latency_ms} ms; caller: {user_text!r}")  # fmt: skip

    await page.click("#hangup")
    await expect(page.locator("#record")).to_have_attribute("data-status", "completed", timeout=20_000)
    audio = page.locator("#recording")
    assert (await audio.get_attribute("src")).startswith("blob:")
    duration = await until(page, "() => { const a = document.querySelector('#recording'); return a.readyState >= 1 && a.duration; }",
                           timeout_s=10, what="the recording's metadata")  # fmt: skip
    assert duration > 5

    rec = await served.call_record(call_id)
    assert (rec["status"], rec["connectionType"]) == ("completed", "webrtc"), rec.get("error")
    assert f"End reason{rec['endReason']}" in await page.text_content("#record")  # the page shows the record
    turns = rec["transcript"]
    greeting, said = turns[0], next(t for t in turns if t["role"] == "user")
    assert greeting["role"] == "agent" and greeting["interrupted"] and greeting["heardMs"] > 0, greeting
    assert "forward" in said["text"] and "meters" in said["text"], said
    assert said["text"] in user_text
    reply = turns[turns.index(said) + 1]
    assert reply["role"] == "agent" and "forward" in reply["text"] and reply["latencyMs"] == latency_ms
    barge_in = next(e for e in rec["events"] if e["kind"] == "barge_in")
    speech = next(e for e in rec["events"] if e["kind"] == "caller_speech_start" and e["atMs"] <= barge_in["atMs"] + 50)
    decided_ms = barge_in["atMs"] - speech["data"].get("onsetMs", speech["atMs"])
    print(f"the gateway's barge-in: {decided_ms} ms after the caller's onset it heard (its own clock)")
    assert rec["recording"]["status"] == "completed"
    assert not page.console_errors, page.console_errors
    # Chromium's receive jitter buffer is the browser's: past its usual hold on loopback it grew
    # (seen once at 297 ms, the gateway deciding in 113 ms); that excess is not the gateway's
    excess_ms = max(0.0, buffered_ms - JITTER_USUAL_MS)
    assert 0 < stop_ms - excess_ms <= BARGE_IN_STOP_MS, (
        f"agent audio stopped {stop_ms:.0f} ms after the caller's onset at the page (the gateway decided "
        f"{decided_ms} ms after the onset it heard; Chromium's jitter buffer held {buffered_ms:.0f} ms)")  # fmt: skip
    print(f"playground call test: {time.monotonic() - started:.1f} s")
