"""Command line: ``gateway serve | mcp | demo | call | fuzz | amd | keys | bench``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

__all__ = ["main", "app"]

# One BLAS thread per process (before numpy loads): the media engine's batched GEMMs are small,
# and a thread pool per product would spread one tick over every core and cost more CPU in all.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Realtime media gateway for AI phone calls.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage REST API keys (only their hashes are stored).")
app.add_typer(keys_app, name="keys")
console = Console()


def _settings(**overrides):
    """Settings from the environment; a bad setting prints what is wrong and exits 2."""
    from pydantic import ValidationError

    from gateway.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            name = "GATEWAY_" + "_".join(str(p) for p in err["loc"]).upper()
            message = str((err.get("ctx") or {}).get("error") or err["msg"])
            typer.echo(message if message.startswith(name) else f"invalid setting {name}: {message}", err=True)
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    from gateway.logs import setup_logging

    setup_logging(level)  # every handler redacts stream tokens (gateway.logs)


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Interface to listen on (GATEWAY_HOST)."),
    port: Optional[int] = typer.Option(None, help="TCP port (GATEWAY_PORT)."),
) -> None:
    """Serve the REST API and the carrier media streams.

    SIGTERM / Ctrl-C: live calls end with reason ``shutdown`` (sockets closed with 1001) and
    their records are written, waiting at most GATEWAY_SHUTDOWN_TIMEOUT_S (then uvicorn waits
    as long again before cancelling what is left); then the process exits.
    """
    import uvicorn

    from gateway.app import create_app
    from gateway.serving import GatewayServer

    settings = _settings(host=host, port=port)
    _logging(settings.log_level)
    from gateway.logs import log_config

    config = uvicorn.Config(
        create_app(settings),
        log_config=log_config(settings.log_level),
        host=settings.host,
        port=settings.port,
        ws_max_size=1 << 20,
        ws=settings.ws_impl,
        log_level=settings.log_level.lower(),
        ws_ping_interval=None,
        # after the calls were asked to end, uvicorn waits this long for what is left, then
        # cancels it (a cancelled session still finalises its record): SIGTERM always exits
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]
    )
    server = GatewayServer(config, shutdown_timeout_s=settings.shutdown_timeout_s)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # as uvicorn.run: start-up failed (port in use, lifespan error …)


@app.command()
def mcp(
    url: str = typer.Option(..., help="The gateway's base URL, e.g. https://gw.example.com."),
    api_key_env: str = typer.Option("GATEWAY_API_KEY", help="Environment variable holding the API key."),
    timeout: float = typer.Option(30.0, min=0.1, help="Limit of each request to the gateway (s)."),
) -> None:
    """Serve MCP over stdin/stdout (for Claude Desktop, Cursor …): tools place_call, get_call,
    list_calls, hangup_call and wait_for_call act on the gateway at --url with the key in
    --api-key-env (the key is read from the environment so it stays out of process listings).
    Exits 2 when the variable is unset or empty."""
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        typer.echo(f"{api_key_env} is not set: put the gateway API key in it (or name another with --api-key-env)",
                   err=True)  # fmt: skip
        raise typer.Exit(2)
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter("must be an http(s):// URL", param_hint="--url")
    from gateway.mcp import run_stdio

    _logging(os.environ.get("GATEWAY_LOG_LEVEL", "WARNING"))  # logs go to stderr: stdout is the protocol
    asyncio.run(run_stdio(url, key, timeout_s=timeout))


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument("default", help="A label for the key."),
    tenant: str = typer.Option("default", help="Tenant the key acts for (lower-case letters and digits)."),
) -> None:
    """Create an API key and print it once (only its SHA-256 is stored).

    The key sees only its tenant's agents and calls, and may reference only the secrets
    granted to its tenant (GATEWAY_SECRET_<TENANT>_* and GATEWAY_TENANT_SECRETS).
    """
    from gateway.store import Store
    from gateway.tenants import check_tenant_name

    try:
        check_tenant_name(tenant)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenant") from None
    settings = _settings()
    store = Store(settings.database_url)
    store.create_all()
    key, record = store.create_api_key(name, tenant=tenant)
    console.print(f"[bold]{key}[/bold]")
    console.print(f"id {record.id} (tenant {record.tenant}): store it now, it is not shown again.", style="dim")


@app.command()
def call(
    url: str = typer.Argument(..., help="The call's stream URL (ws:// or wss://)."),
    carrier: str = typer.Option("twilio", help="Protocol to speak: twilio or raw."),
    wav: Optional[Path] = typer.Option(None, help="WAV the caller speaks (any rate, mono PCM16)."),
    say: str = typer.Option("Hello, I would like to check my appointment for tomorrow.",
                            help="Line to synthesise when no --wav is given."),
    barge_in: Optional[Path] = typer.Option(None, help="WAV spoken over the agent's reply."),
    out: Path = typer.Option(Path("heard.wav"), help="Where to save what the caller heard."),
    wait_greeting: bool = typer.Option(True, help="Wait for the agent's greeting before speaking."),
    echo_db: Optional[float] = typer.Option(None, help="Return the agent's audio as echo on the caller's leg, this "
                                            "many dB down (echo return loss, 0-90; e.g. 25: a common residual)."),
    echo_delay_ms: Optional[float] = typer.Option(None, help="Delay of that echo (ms, 20-1000; default 100)."),
    echo_path: str = typer.Option("hybrid", help="Shape of the echo path: hybrid (a 2-4 wire hybrid), room "
                                  "(a speakerphone in a small room) or flat."),
) -> None:
    """Place one simulated carrier call against a stream URL and report what happened.

    With ``--echo-db`` the caller returns what it hears as echo (gateway.simulator.echo), mixed
    under its own speech and encoded in the carrier's codec, as a phone line does.
    """
    from gateway.simulator.dialects import DIALECTS, make_dialect
    from gateway.simulator.echo import EchoPath
    from gateway.simulator.run import caller_line, run_call

    if carrier not in DIALECTS:
        raise typer.BadParameter(f"choose one of {', '.join(sorted(DIALECTS))}", param_hint="--carrier")
    echo = None
    if echo_db is None and echo_delay_ms is not None:
        raise typer.BadParameter("an echo delay needs an echo level: add --echo-db", param_hint="--echo-delay-ms")
    if echo_db is not None:
        rate = make_dialect(carrier).audio_format.sample_rate
        try:
            echo = EchoPath(rate, return_loss_db=echo_db, delay_ms=100.0 if echo_delay_ms is None else echo_delay_ms,
                            response=echo_path)  # fmt: skip
        except ValueError as exc:
            hint = ("--echo-db" if "loss" in str(exc) else "--echo-delay-ms" if "delay" in str(exc) else "--echo-path")
            raise typer.BadParameter(str(exc), param_hint=hint) from None

    _logging("WARNING")
    line = caller_line(wav, say)
    report = asyncio.run(run_call(url, carrier, line, barge_in=barge_in, wait_greeting=wait_greeting, out=out,
                                  echo=echo))  # fmt: skip
    console.print_json(data=report)


@app.command()
def demo(
    wav: Optional[Path] = typer.Option(None, help="WAV the caller speaks (default: a line synthesised now)."),
    say: str = typer.Option("Hello, I would like to check my appointment for tomorrow.",
                            help="Line to synthesise when no --wav is given."),
    carrier: str = typer.Option("twilio", help="Protocol the simulated caller speaks: twilio or raw."),
    barge_in: Optional[Path] = typer.Option(None, help="WAV the caller speaks over the agent's reply."),
    outbound: bool = typer.Option(False, "--outbound", help="Instead: place two outbound calls through the "
                                  "carrier simulator (a person, a voicemail with a beep) and print both outcomes."),
) -> None:
    """Serve on loopback, place one simulated phone call of real speech, print what happened."""
    _logging(os.environ.get("GATEWAY_LOG_LEVEL", "WARNING"))
    if outbound:
        from gateway.simulator.outbound_demo import run_outbound_demo

        raise typer.Exit(asyncio.run(run_outbound_demo(console)))
    from gateway.simulator.demo import run_demo

    code = asyncio.run(run_demo(console, wav=wav, say=say, carrier=carrier, barge_in=barge_in))
    raise typer.Exit(code)


@app.command()
def fuzz(
    frames: int = typer.Option(100_000, min=1, help="Fuzzed frames to send per dialect (across many calls)."),
    dialects: str = typer.Option("twilio,telnyx,plivo,vonage,exotel,raw", help="Carrier dialects, one after another."),
    concurrency: int = typer.Option(8, min=1, help="Calls streaming at once."),
    seed: int = typer.Option(0, help="Seed of the fuzzed frames (a run is reproducible)."),
    vad: str = typer.Option("webrtc", help="VAD of the gateway under test: webrtc or silero."),
    workdir: Optional[Path] = typer.Option(None, help="Keep the database and gateway log here (default: a temp dir)."),
) -> None:
    """Fuzz carrier streams over real sockets against a gateway process; JSON report on the last line.

    Exits 1 if any dialect saw a crash, an internal_error call, an internal parse error or an
    unfinalised record.
    """
    import json

    from gateway.simulator.fuzz import DIALECT_NAMES, run_fuzz

    names = [d for d in dialects.split(",") if d]
    unknown = sorted(set(names) - set(DIALECT_NAMES))
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(DIALECT_NAMES)}",
                                 param_hint="--dialects")  # fmt: skip
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run_fuzz(frames=frames, dialects=names, concurrency=concurrency, seed=seed, vad=vad,
                                  workdir=workdir, log=lambda line: print(line, file=sys.stderr, flush=True)))  # fmt: skip
    print(json.dumps(report), flush=True)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command()
def amd(
    files: list[Path] = typer.Argument(..., help="WAVs of call openings (any rate, mono PCM16), from the answer on."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on the last line."),
    vad: str = typer.Option("webrtc", help="VAD feeding the detector: webrtc or silero."),
) -> None:
    """Voicemail detection on recordings, as in a call: 8 kHz μ-law, 20 ms frames, simulated time.

    Prints per file the verdict, its decision time (ms from the start of the file, the answer)
    and, for a beep, the beep's detected end. Exits 2 on an unreadable file.
    """
    import json
    import wave

    from gateway.audio.amd_runner import AmdRunner, analyse
    from gateway.simulator.run import load_wav

    if vad not in ("webrtc", "silero"):
        raise typer.BadParameter("choose webrtc or silero", param_hint="--vad")
    scorer = None
    if vad == "silero":
        from gateway.audio.silero import SileroModel
        from gateway.audio.vad import SileroScorer

        model = SileroModel()
    rows = []
    for path in files:
        try:
            pcm, rate = load_wav(path)
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            typer.echo(f"{path}: not a readable PCM16 WAV: {exc}", err=True)
            raise typer.Exit(2) from None
        if vad == "silero":
            scorer = SileroScorer(model, 8000)
        events = analyse(pcm, rate, runner=AmdRunner(8000, scorer=scorer))
        last = events[-1] if events else None
        row = {"file": str(path), "verdict": last.verdict.value if last else "unknown",
               "decided_ms": last.decided_ms if last else None,
               "beep_end_ms": last.beep_end_ms if last else None}
        rows.append(row)
        if not json_out:
            beep = f"  beep ended {row['beep_end_ms']:.0f} ms" if row["beep_end_ms"] is not None else ""
            steps = " → ".join(f"{e.verdict.value}@{e.decided_ms:.0f}" for e in events)
            typer.echo(f"{path}: {row['verdict']} at {row['decided_ms']} ms{beep}  ({steps})")
            if last:
                typer.echo("   cues: " + ", ".join(last.cues))
    if json_out:
        print(json.dumps({"files": rows}), flush=True)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: media-path cost and load.")
app.add_typer(bench_app, name="bench")


@bench_app.command("media")
def bench_media(
    calls: str = typer.Option("1,10,100,500", help="Simultaneous call counts to measure."),
    seconds: float = typer.Option(3.0, help="Seconds of call audio per call and row."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on the last line."),
    plot: Optional[Path] = typer.Option(Path("bench-out/media.png"), help="PNG plot path."),
    vads: str = typer.Option("webrtc,silero", help="VADs to measure, each at the session's rate for the carrier (8 kHz for 8 kHz carriers)."),
    carriers: str = typer.Option("twilio,telnyx,plivo,vonage,exotel,raw", help="Carriers for the per-carrier rows."),
    carrier_calls: int = typer.Option(100, help="Simultaneous calls in the per-carrier rows."),
    engine_calls: Optional[str] = typer.Option(None, help="Call counts for the per-tick engine rows (default: --calls; e.g. 1,100,400,1000)."),
    echo_calls: str = typer.Option("1,100,400", help="Call counts for the echo stage rows (empty: none)."),
    webrtc_calls: str = typer.Option("1,100", help="Call counts for the webrtc rows, Opus decode/encode (empty: none)."),
) -> None:
    """CPU cost of the media path per 20 ms frame, per carrier, no sockets."""
    from benchmarks.media import main as bench_main

    bench_main(calls=[int(c) for c in calls.split(",") if c], seconds=seconds, json_out=json_out, plot=plot,
               vads=[v for v in vads.split(",") if v], carriers=[c for c in carriers.split(",") if c],
               carrier_calls=carrier_calls,
               engine_calls=None if engine_calls is None else [int(c) for c in engine_calls.split(",") if c],
               echo_calls=[int(c) for c in echo_calls.split(",") if c],
               webrtc_calls=[int(c) for c in webrtc_calls.split(",") if c])  # fmt: skip


@bench_app.command("load")
def bench_load(
    calls: int = typer.Option(50, help="Simultaneous calls (one step; see --ramp)."),
    carriers: str = typer.Option("twilio,telnyx,plivo,vonage,exotel,raw", help="Carrier dialects, mixed round-robin."),
    url: Optional[str] = typer.Option(None, help="A running gateway (loopback only); default: start one here."),
    api_key: Optional[str] = typer.Option(None, help="REST API key of --url."),
    model: Optional[str] = typer.Option(None, help="Calls' model selector (required with --url); default: a fake realtime model started here."),
    gateway_pid: Optional[int] = typer.Option(None, help="pid of --url's gateway, to read its CPU and RSS."),
    vad: str = typer.Option("silero", help="VAD of the gateway started here: silero or webrtc."),
    g711: bool = typer.Option(True, help="Gateway started here passes G.711 through to the model (as OpenAI)."),
    ramp: bool = typer.Option(False, help="Grow the load to find the most calls that hold the targets."),
    ramp_start: int = typer.Option(25, help="First ramp step."),
    ramp_max: int = typer.Option(800, help="Largest ramp step."),
    time_budget: float = typer.Option(600.0, help="Ramp time limit (s)."),
    arrival: Optional[float] = typer.Option(None, help="Spread caller arrivals over this many seconds."),
    pin: bool = typer.Option(True, help="Pin the gateway to core 0, driver and model to the others."),
    script: str = typer.Option("full", help="Caller script: full (pauses, barge-in) or short (smoke test)."),
    settle: bool = typer.Option(True, help="Wait for the started gateway's start-up work to settle first."),
    media_listener: str = typer.Option("starlette", help="Streams of the gateway started here: starlette or picows."),
    media_engine: str = typer.Option("tick", help="Caller audio in the gateway started here: tick (the engine) or frame."),
    gateway_root: Optional[Path] = typer.Option(None, help="Start the gateway of this checkout instead (e.g. a worktree of the previous main), with this checkout's driver."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on the last line."),
    plot: Optional[Path] = typer.Option(Path("bench-out/load.png"), help="PNG plot path."),
    out_dir: Optional[Path] = typer.Option(Path("bench-out"), help="Where load.json and load.md go."),
) -> None:
    """Simulated carrier calls over real WebSockets: gateway CPU and memory per call, pacing, latencies."""
    from benchmarks.load import main as load_main

    _logging("WARNING")
    load_main(calls, carriers=[c for c in carriers.split(",") if c], url=url, api_key=api_key, model=model,
              gateway_pid=gateway_pid, vad=vad, g711=g711, ramp=ramp, ramp_start=ramp_start, ramp_max=ramp_max,
              time_budget_s=time_budget, arrival_s=arrival, pin=pin, script=script, settle=settle,
              json_out=json_out, plot=plot, out_dir=out_dir, media_listener=media_listener,
              media_engine=media_engine, gateway_root=gateway_root)  # fmt: skip


@bench_app.command("bargein")
def bench_bargein(
    bands: str = typer.Option("none,12-20,20-25,25-35,35-50", help="Echo return-loss bands (dB) of the rows, "
                              "lo-hi, comma-separated; none: line noise only."),
    utterances: int = typer.Option(20, min=1, help="Agent utterances per row (each: an echo-only call, a "
                                   "barge-in and a backchannel)."),
    mode: str = typer.Option("immediate", help="Barge-in mode of the calls: immediate or pause_then_commit."),
    echo_cancel: Optional[str] = typer.Option(None, help="GATEWAY_ECHO_CANCEL of the gateway started here: on or "
                                              "off (default: its own default)."),
    vad: str = typer.Option("silero", help="VAD of the gateway started here: silero or webrtc."),
    voice: str = typer.Option("piper", help="Agent speech: piper (the bundled voice) or espeak (espeak-ng)."),
    concurrency: int = typer.Option(10, min=1, help="Calls at once."),
    seed: int = typer.Option(0, help="Seed of the per-call draws (return loss, delay, noise, timing)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
    out: Optional[Path] = typer.Option(None, help="Also write the result (JSON) here."),
) -> None:
    """False barge-ins on the agent's own echo, recall and latency of real ones, backchannels: real calls."""
    from benchmarks.bargein import MODES, main as bargein_main, parse_bands

    if mode not in MODES:
        raise typer.BadParameter(f"choose one of {', '.join(MODES)}", param_hint="--mode")
    if vad not in ("silero", "webrtc"):
        raise typer.BadParameter("choose silero or webrtc", param_hint="--vad")
    if echo_cancel not in (None, "on", "off"):
        raise typer.BadParameter("choose on or off", param_hint="--echo-cancel")
    if voice not in ("piper", "espeak"):
        raise typer.BadParameter("choose piper or espeak", param_hint="--voice")
    try:
        parse_bands(bands)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--bands") from None
    _logging("WARNING")
    bargein_main(bands=bands, utterances=utterances, mode=mode, echo_cancel=echo_cancel, vad=vad, voice=voice,
                 concurrency=concurrency, seed=seed, json_out=json_out, out=out)  # fmt: skip


@bench_app.command("peers")
def bench_peers(
    calls: int = typer.Option(100, help="Simultaneous calls (messages per 20 ms tick)."),
    seconds: float = typer.Option(3.0, help="Seconds of call audio per call and round."),
    rounds: int = typer.Option(5, help="Alternating rounds of each side."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on the last line."),
    out: Optional[Path] = typer.Option(Path("benchmarks/results/peers.json"), help="Where the result goes."),
) -> None:
    """Inbound media path against Pipecat 1.14's on the same Twilio messages (Pipecat in its own venv)."""
    from benchmarks.peers.run import main as peers_main

    peers_main(calls, seconds, rounds, json_out=json_out, out=out)


@bench_app.command("report")
def bench_report(
    ramp: bool = typer.Option(True, help="Include a load ramp (the longest part)."),
    time_budget: float = typer.Option(420.0, help="Ramp time limit (s)."),
    readme: Path = typer.Option(Path("benchmarks/README.md"), help="README whose figures block is rewritten."),
) -> None:
    """Run both benchmarks at their default sizes (and a ramp) and rewrite benchmarks/README.md's figures."""
    from benchmarks.report import main as report_main

    _logging("WARNING")
    report_main(ramp=ramp, time_budget_s=time_budget, readme=readme)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
