"""Answering-machine detection (gateway.audio.amd) on generated call openings and tones.

The fixtures in ``tests/audio/fixtures/amd`` are generated (``make_amd_fixtures.py``:
espeak-ng and Piper voices, beeps, line noise, μ-law); the detector was tuned on them and on
wider generated sets, never on ``../shared/audio``, which only the acceptance test reads.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gateway.audio.amd import (
    TRANSITIONS,
    AmdConfig,
    AmdDetector,
    AmdEvent,
    AmdState,
    AmdStateError,
    Verdict,
)
from gateway.audio.amd_runner import AmdRunner, analyse, phone_path
from gateway.audio.tones import dtmf_sequence, tone
from gateway.simulator.run import load_wav
from tests.conftest import ROOT

FIXTURES = Path(__file__).parent / "fixtures" / "amd"
LABELS = json.loads((FIXTURES / "labels.json").read_text())
SHARED = ROOT.parent / "shared" / "audio"
MACHINE = {Verdict.MACHINE, Verdict.MACHINE_END_BEEP, Verdict.MACHINE_END_SILENCE}


def run_fixture(entry: dict, *, text: bool = False, chunk_ms: int = 20) -> list[AmdEvent]:
    pcm, rate = load_wav(FIXTURES / entry["file"])
    runner = AmdRunner(8000)
    if not text or not entry.get("text"):
        return analyse(pcm, rate, runner=runner, chunk_ms=chunk_ms)
    x = phone_path(pcm, rate)
    at = int(entry["greeting_end_s"] * 8000) + 2400      # the recogniser's final, 0.3 s later
    runner.process(x[:at])
    runner.hear(entry["text"])
    return analyse(x[at:], 8000, runner=runner, chunk_ms=chunk_ms)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, list[AmdEvent]]:
    return {e["file"]: run_fixture(e) for e in LABELS}


def test_the_fixture_set_covers_the_cases():
    kinds = Counter(e["label"] for e in LABELS)
    assert kinds["human"] >= 12 and kinds["machine"] >= 10 and kinds["screening"] >= 2
    assert sum("beep_end_s" in e for e in LABELS) >= 9
    assert sum(e["file"].startswith("human-business") for e in LABELS) >= 4
    assert sum(f.stat().st_size for f in FIXTURES.glob("*.wav")) < 3.2e6


@pytest.mark.parametrize("entry", LABELS, ids=[e["file"] for e in LABELS])
def test_fixture_verdict(entry, outcomes):
    events = outcomes[entry["file"]]
    assert events, "no verdict at all"
    assert events[-1].verdict.value == entry["expect"], [(e.verdict.value, e.decided_ms, e.cues) for e in events]
    assert events[-1].final or events[-1].verdict is Verdict.HUMAN
    if entry["label"] == "human":   # never a machine verdict on a person, not even for a while
        assert not any(e.verdict in MACHINE for e in events)


@pytest.mark.parametrize("entry", [e for e in LABELS if e["label"] == "human"], ids=lambda e: e["file"])
def test_humans_are_decided_quickly(entry, outcomes):
    """A short greeting is ``human`` within 3.0 s of the speech start; any greeting within
    1.6 s of its end (800 ms after-greeting silence, or 1,200 ms after a long one, + the VAD)."""
    (human,) = outcomes[entry["file"]]
    if "business" not in entry["file"]:
        assert human.decided_ms - 1000 * entry["speech_start_s"] <= 3000
    assert human.decided_ms - 1000 * entry["greeting_end_s"] <= 1600


@pytest.mark.parametrize("entry", [e for e in LABELS if "beep_end_s" in e], ids=lambda e: e["file"])
def test_machine_end_beep_fires_within_250_ms_of_the_beep_end(entry, outcomes):
    last = outcomes[entry["file"]][-1]
    end = 1000 * entry["beep_end_s"]
    assert last.verdict is Verdict.MACHINE_END_BEEP
    assert 0 <= last.decided_ms - end <= 250
    assert abs(last.beep_end_ms - end) <= 25
    assert any(c.startswith("beep=") for c in last.cues)


@pytest.mark.parametrize("entry", [e for e in LABELS if e.get("text")], ids=lambda e: e["file"])
def test_with_the_transcript(entry):
    events = run_fixture(entry, text=True)
    assert events[-1].verdict.value == entry["expect_with_text"], [(e.verdict.value, e.cues) for e in events]
    if entry["label"] == "human":
        assert not any(e.verdict in MACHINE for e in events)


def test_confusion_matrix_and_decision_times(outcomes, capsys):
    """Prints the confusion matrix (label → final verdict) and the decision-time spread."""
    matrix = Counter((e["label"], outcomes[e["file"]][-1].verdict.value) for e in LABELS)
    human_ms = [outcomes[e["file"]][0].decided_ms - 1000 * e["speech_start_s"]
                for e in LABELS if e["label"] == "human" and "business" not in e["file"]]
    with capsys.disabled():
        print("\nAMD confusion (label, verdict): count", dict(sorted(matrix.items())))
        print("human decided after speech start, ms: min %d median %d max %d"
              % (min(human_ms), np.median(human_ms), max(human_ms)))
    assert matrix[("human", "human")] == sum(e["label"] == "human" for e in LABELS)
    assert not any(v.startswith("machine") for (label, v) in matrix if label == "human")


@pytest.mark.parametrize("chunk_ms", [1, 7, 20, 33, 250])
def test_output_does_not_depend_on_chunking(chunk_ms):
    entry = next(e for e in LABELS if e["file"] == "machine-paused.wav")
    assert run_fixture(entry, chunk_ms=chunk_ms) == run_fixture(entry, chunk_ms=20)


def test_random_chunks_match_frames():
    pcm, _ = load_wav(FIXTURES / "human-business-1.wav")
    a, b = AmdRunner(8000), AmdRunner(8000)
    for i in range(0, pcm.size, 160):
        a.process(pcm[i:i + 160])
    rng = np.random.default_rng(3)
    i = 0
    while i < pcm.size:
        n = int(rng.integers(1, 900))
        b.process(pcm[i:i + n])
        i += n
    assert a.events == b.events and a.events


# --- the logic, with explicit VAD decisions ---------------------------------------------

_RNG = np.random.default_rng(11)
#: "Speech" frames for the logic tests: white noise whose level moves like syllables
#: (−30, −20, −20, −20 dBFS), so a word's frames stand above the noise floor.
_VOICE = [(_RNG.standard_normal(160) * 32768 / np.sqrt(2) * 10 ** (db / 20)).astype(np.int16)
          for db in (-30, -20, -20, -20)]


def feed(det: AmdDetector, pattern: list[tuple[bool, int]], frame=None) -> list[AmdEvent]:
    """Feed (speech, ms) runs with those VAD decisions: "speech" frames (or ``frame``) for
    speech, digital silence (or ``frame``) otherwise."""
    z = np.zeros(det.frame_samples, dtype=np.int16) if frame is None else frame
    out = []
    for speech, ms in pattern:
        for i in range(ms // det.frame_ms):
            f = (_VOICE[i % 4] if det.frame_samples == 160 else np.repeat(_VOICE[i % 4], 2)) \
                if speech and frame is None else z
            if (ev := det.push(f, speech)) is not None:
                out.append(ev)
    return out


def test_short_greeting_then_silence_is_human_after_800_ms():
    det = AmdDetector()
    (ev,) = feed(det, [(False, 400), (True, 600), (False, 3000)])
    assert ev.verdict is Verdict.HUMAN and ev.decided_ms == 400 + 600 + 800
    assert "after_silence_ms=800" in ev.cues and "greeting_ms=600" in ev.cues


def test_business_length_greeting_waits_longer_and_is_human():
    det = AmdDetector()
    speech = [(True, 700), (False, 300)] * 4          # 3.7 s, pauses under 800 ms
    (ev,) = feed(det, [(False, 300), *speech, (False, 3000)])
    assert ev.verdict is Verdict.HUMAN
    assert ev.decided_ms == 300 + 3700 + 1200


def test_long_continuous_greeting_is_machine_then_end_silence():
    det = AmdDetector()
    events = feed(det, [(False, 300), *[(True, 900), (False, 200)] * 7, (False, 3000)])
    assert [e.verdict for e in events] == [Verdict.MACHINE, Verdict.MACHINE_END_SILENCE]
    assert events[0].decided_ms == pytest.approx(300 + 5500, abs=200)
    assert events[1].final and not events[0].final
    assert det.state is AmdState.DONE


def test_hello_hello_with_gaps_is_not_a_machine():
    det = AmdDetector()
    events = feed(det, [(False, 300), *[(True, 300), (False, 700)] * 8, (False, 2000)])
    assert [e.verdict for e in events] == [Verdict.HUMAN]


def test_vad_blips_do_not_make_words():
    det = AmdDetector()
    events = feed(det, [(False, 1000), *[(True, 60), (False, 300)] * 12])
    assert [e.verdict for e in events] == [Verdict.UNKNOWN]   # initial silence only
    assert "no_speech" in events[0].cues


def test_initial_silence_is_unknown_and_a_later_greeting_still_decides():
    det = AmdDetector()
    events = feed(det, [(False, 5200), (True, 500), (False, 1000)])
    assert [e.verdict for e in events] == [Verdict.UNKNOWN, Verdict.HUMAN]
    assert events[0].decided_ms == 5000


def test_beep_decides_and_is_not_speech_even_if_the_vad_says_so():
    det = AmdDetector()
    feed(det, [(False, 300), (True, 1500), (False, 200)])
    beep = tone(1000, 400, 8000, level_dbfs=-14)
    events = []
    for i in range(0, beep.size, 160):
        if (ev := det.push(beep[i:i + 160], True)) is not None:
            events.append(ev)
    events += feed(det, [(False, 400)])
    (ev,) = events
    assert ev.verdict is Verdict.MACHINE_END_BEEP and ev.final
    assert ev.beep_end_ms == 300 + 1500 + 200 + 400
    assert 0 < ev.decided_ms - ev.beep_end_ms <= 250
    assert "greeting_ms=1500" in ev.cues


def test_beep_soon_after_human_revises_it_but_not_later():
    beep = tone(850, 300, 8000, level_dbfs=-14)
    for gap_ms, revised in [(1000, True), (6000, False)]:
        det = AmdDetector()
        events = feed(det, [(False, 300), (True, 800), (False, 800 + gap_ms)])
        for i in range(0, beep.size, 160):
            if (ev := det.push(beep[i:i + 160], False)) is not None:
                events.append(ev)
        events += feed(det, [(False, 400)])
        assert [e.verdict for e in events] == [Verdict.HUMAN] + ([Verdict.MACHINE_END_BEEP] if revised else [])


def test_a_machine_phrase_never_revises_a_human_verdict_but_a_beep_still_may():
    det = AmdDetector()
    events = feed(det, [(False, 300), (True, 800), (False, 1000)])
    assert [e.verdict for e in events] == [Verdict.HUMAN] and det.words == 1
    # a receptionist, 1.3 s after the verdict
    assert det.hear("She's not available right now, can I take a message?") is None
    assert det.state is AmdState.HUMAN
    events += feed(det, [(False, 300), (True, 400), (False, 300)])
    assert det.words == 2  # the callee's next word is counted
    beep = tone(850, 300, 8000, level_dbfs=-14)
    for i in range(0, beep.size, 160):
        if (ev := det.push(beep[i:i + 160], False)) is not None:
            events.append(ev)
    events += feed(det, [(False, 400)])
    assert [e.verdict for e in events] == [Verdict.HUMAN, Verdict.MACHINE_END_BEEP]


def test_dtmf_is_not_a_beep():
    det = AmdDetector()
    x = phone_path(dtmf_sequence("5551234#", 8000, on_ms=150, off_ms=80), 8000)
    x = np.concatenate([x, np.zeros(8000 * 6, dtype=np.int16)])
    events = [ev for i in range(0, x.size - 159, 160) if (ev := det.push(x[i:i + 160], False))]
    assert [e.verdict for e in events] == [Verdict.UNKNOWN]


def test_phrases():
    det = AmdDetector()
    feed(det, [(False, 300), (True, 1200)])
    ev = det.hear("Hi, you've reached Tom. Please LEAVE a   message!")
    assert ev.verdict is Verdict.MACHINE and "phrase=leave a message" in ev.cues and not ev.final
    assert det.hear("at the tone") is None                     # already machine
    ev = det.hear("The person you\u2019re calling is using a screening service", at_ms=2100.0)
    assert ev.verdict is Verdict.SCREENING and ev.final and ev.decided_ms == 2100.0
    assert det.hear("leave a message") is None                 # done
    people = AmdDetector()
    feed(people, [(False, 300), (True, 800)])
    assert people.hear("Hello? Who is this? I can't hear you") is None
    assert people.hear("This is Vail Able speaking") is None
    mixed = AmdDetector()
    assert mixed.hear("Please record your name and message after the tone").verdict is Verdict.MACHINE


def test_sixteen_khz_frames():
    det = AmdDetector(16000)
    assert det.frame_samples == 320
    z = np.zeros(320, dtype=np.int16)
    feed(det, [(True, 500)])
    beep = tone(1400, 300, 16000, level_dbfs=-14)
    events = [det.push(beep[i:i + 320], False) for i in range(0, beep.size, 320)]
    events += [det.push(z, False) for _ in range(20)]
    (ev,) = [e for e in events if e]
    assert ev.verdict is Verdict.MACHINE_END_BEEP and ev.beep_end_ms == 800


def test_state_machine_is_explicit():
    assert set(TRANSITIONS) == set(AmdState)
    assert TRANSITIONS[AmdState.DONE] == frozenset()
    det = AmdDetector()
    with pytest.raises(AmdStateError):
        det._go(AmdState.HUMAN)                 # LISTENING -> HUMAN skips the greeting
    assert det.state is AmdState.LISTENING
    with pytest.raises(ValueError):
        det.push(np.zeros(100, dtype=np.int16), False)


def test_config_and_runner_checks():
    det = AmdDetector(config=AmdConfig(after_greeting_ms=400))
    (ev,) = feed(det, [(True, 500), (False, 600)])
    assert ev.decided_ms == 900
    with pytest.raises(TypeError):
        AmdRunner(8000).process(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError):
        AmdRunner(8000).process(np.zeros((2, 10), dtype=np.int16))
    with pytest.raises(TypeError):
        phone_path(np.zeros(10), 8000)


def test_silero_as_the_vad():
    from gateway.audio.silero import SileroModel
    from gateway.audio.vad import SileroScorer

    scorer = SileroScorer(SileroModel(), 8000)
    for name, expect in [("human-dan-gb.wav", "human"), ("machine-carrier-beep.wav", "machine_end_beep")]:
        pcm, rate = load_wav(FIXTURES / name)
        events = analyse(pcm, rate, runner=AmdRunner(8000, scorer=scorer))
        scorer.reset()
        assert events[-1].verdict.value == expect


# --- acceptance: the shared recordings (never used for tuning) --------------------------

def speech_onset_ms(pcm: np.ndarray) -> float:
    """First 20 ms frame above −40 dBFS, ms."""
    fr = pcm[: pcm.size // 160 * 160].astype(np.float64).reshape(-1, 160)
    db = 10 * np.log10(np.mean(fr**2, axis=1) / (32768**2 / 2) + 1e-12)
    return 20.0 * int(np.flatnonzero(db > -40)[0])


@pytest.mark.skipif(not (SHARED / "amd" / "labels.json").exists(), reason="../shared/audio/amd absent")
def test_acceptance_on_shared_amd_recordings():
    labels = json.loads((SHARED / "amd" / "labels.json").read_text())
    assert labels
    for e in labels:
        pcm, rate = load_wav(SHARED / e["file"])
        events = analyse(pcm, rate)
        last = events[-1]
        if e["label"] == "human":
            assert [ev.verdict for ev in events] == [Verdict.HUMAN], e["file"]
            x = phone_path(pcm, rate)
            assert last.decided_ms - speech_onset_ms(x) <= 3000, e["file"]
        else:
            assert last.verdict is Verdict.MACHINE_END_BEEP, (e["file"], events)
            end = 1000 * e["beep_end_s"]
            assert 0 <= last.decided_ms - end <= 250, (e["file"], last)
            assert abs(last.beep_end_ms - end) <= 25


# --- gateway amd ------------------------------------------------------------------------

def test_cli_amd_json_is_the_detector_of_the_call_loop(tmp_path):
    from typer.testing import CliRunner

    from gateway.cli import app

    names = ["human-hello-us.wav", "machine-two-beeps.wav", "machine-family-nobeep.wav"]
    paths = [str(FIXTURES / n) for n in names]
    res = CliRunner().invoke(app, ["amd", "--json", *paths])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output.strip().splitlines()[-1])
    assert [f["file"] for f in doc["files"]] == paths
    for row, name in zip(doc["files"], names):
        last = run_fixture(next(e for e in LABELS if e["file"] == name))[-1]
        assert row == {"file": str(FIXTURES / name), "verdict": last.verdict.value,
                       "decided_ms": last.decided_ms, "beep_end_ms": last.beep_end_ms}
    assert doc["files"][1]["verdict"] == "machine_end_beep" and doc["files"][1]["beep_end_ms"] > 0
    text = CliRunner().invoke(app, ["amd", paths[1]])
    assert text.exit_code == 0 and "machine_end_beep" in text.output and "beep ended" in text.output


def test_cli_amd_resamples_and_rejects_bad_files(tmp_path):
    from typer.testing import CliRunner

    from gateway.cli import app
    from gateway.codecs.resample import resample
    from gateway.simulator.run import save_wav

    pcm, _ = load_wav(FIXTURES / "machine-beep-only.wav")
    save_wav(tmp_path / "wide.wav", resample(pcm, 8000, 16000), 16000)
    res = CliRunner().invoke(app, ["amd", "--json", str(tmp_path / "wide.wav")])
    row = json.loads(res.output.strip().splitlines()[-1])["files"][0]
    assert row["verdict"] == "machine_end_beep" and abs(row["beep_end_ms"] - 1500) <= 25
    (tmp_path / "bad.wav").write_text("not a wav")
    assert CliRunner().invoke(app, ["amd", str(tmp_path / "bad.wav")]).exit_code == 2
    assert CliRunner().invoke(app, ["amd", "--vad", "nope", str(tmp_path / "wide.wav")]).exit_code == 2


def test_bench_media_reports_the_detector_as_its_own_stage():
    from benchmarks import media

    row = media.measure(3, "webrtc", seconds=0.6, audio=media.load_audio(), bridge=False)
    assert row["stages_us"]["amd"] > 0 and row["us_amd_per_frame"] == row["stages_us"]["amd"]
    # reported apart: the inbound total is the four inbound stages only
    ins = sum(row["stages_us"][k] for k in ("parse", "to_vad", "vad_feed", "vad_score"))
    assert row["us_per_in_frame"] == pytest.approx(ins, abs=0.05)
    table = media.table({"rows": [row]})
    assert "AMD µs / frame" in table and f"| {row['us_amd_per_frame']} |" in table


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("level", [-60, -50, -40, -35, -30])
def test_line_noise_alone_is_unknown(kind, level):
    """No greeting from noise, not even from the VAD's start-up transient on a fresh line."""
    from tests.audio.test_tones import phone, silence

    x = phone(silence(8000), (kind, level), seed=-level)
    assert [e.verdict for e in analyse(x, 8000)] == [Verdict.UNKNOWN, Verdict.UNKNOWN]


def test_quiet_frames_never_start_a_word():
    det = AmdDetector()
    quiet = (np.random.default_rng(0).standard_normal(160) * 20).astype(np.int16)   # about −64 dBFS
    events = feed(det, [(True, 3000), (False, 3000)], frame=quiet)
    assert [e.verdict for e in events] == [Verdict.UNKNOWN]
