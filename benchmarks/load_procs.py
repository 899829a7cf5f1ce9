"""Process start-up for ``gateway bench load`` (:mod:`benchmarks.load`): the gateway and the fake
realtime model, each as a separate process on a free loopback port, optionally pinned to cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import httpx

__all__ = ["LocalGateway", "FakeModelProcess", "ROOT"]

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _affinity(cpus: set[int] | None):
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


class FakeModelProcess:
    """:mod:`benchmarks.fake_realtime` in its own process on a free loopback port."""

    def __init__(self, *, cpus: set[int] | None = None, speed: float = 2.0, chunk_ms: int = 100) -> None:
        self.cpus, self.speed, self.chunk_ms = cpus, speed, chunk_ms
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.stats_port = 0

    def start(self, timeout_s: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fake_realtime", "--port", "0", "--speed", str(self.speed),
             "--chunk-ms", str(self.chunk_ms)],
            stdout=subprocess.PIPE, text=True, cwd=str(ROOT), preexec_fn=_affinity(self.cpus),
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if msg.get("ready"):
                    self.port = int(msg["port"])
                    self.stats_port = int(msg.get("stats_port") or self.port)  # /stats: its own HTTP port
                    return
        self.stop()
        raise RuntimeError("the fake realtime model did not start")

    #: The calls' model selector: the gateway's default compat server, which
    #: :attr:`gateway_env` points at this fake model (requests never carry a URL).
    model = "compat:bench"

    @property
    def gateway_env(self) -> dict[str, str]:
        """Settings for a gateway started here so that ``compat:bench`` reaches this server."""
        return {"GATEWAY_COMPAT_REALTIME_URL": f"ws://127.0.0.1:{self.port}/v1"}

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"http://127.0.0.1:{self.stats_port}/stats")
            r.raise_for_status()
            return r.json()

    def stop(self) -> None:
        _terminate(self.proc)


def _terminate(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class LocalGateway:
    """``gateway serve`` as a separate process, on a free loopback port, state in a temp dir."""

    def __init__(self, workdir: Path, *, vad: str = "silero", g711: bool = True, cpus: set[int] | None = None,
                 env: dict[str, str] | None = None, command: Sequence[str] = ("-m", "gateway.cli", "serve"),
                 media_listener: str = "starlette", media_engine: str = "tick", root: Path | None = None) -> None:
        self.workdir = workdir
        self.root = root or ROOT  # the checkout whose gateway runs (another commit, to compare with)
        self.media_listener = media_listener  # starlette | picows (GATEWAY_MEDIA_LISTENER)
        self.media_engine = media_engine  # tick | frame (GATEWAY_MEDIA_ENGINE)
        self.command = list(command)
        self.vad, self.g711, self.cpus = vad, g711, cpus
        self.extra_env = env or {}
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.api_key = ""
        self.log_path = workdir / "gateway.log"

    def start(self, timeout_s: float = 120.0) -> None:
        from gateway.store import Store

        db = f"sqlite:///{self.workdir / 'gateway.db'}"
        store = Store(db)
        store.create_all()
        self.api_key, _ = store.create_api_key("bench")
        with contextlib.suppress(Exception):
            store.close()
        env = {
            **os.environ,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_PUBLIC_URL": self.url,
            "GATEWAY_DATABASE_URL": db,
            "GATEWAY_RECORDINGS_DIR": str(self.workdir / "recordings"),
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_VAD": self.vad,
            "GATEWAY_COMPAT_G711": "true" if self.g711 else "false",
            "GATEWAY_MEDIA_LISTENER": self.media_listener,
            "GATEWAY_MEDIA_ENGINE": self.media_engine,
            "GATEWAY_MEDIA_PORT": str(_free_port()),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(self.root), os.environ.get("PYTHONPATH", "")) if p),
            **self.extra_env,
        }
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, *self.command], cwd=str(self.workdir), env=env,
                                     stdout=log, stderr=subprocess.STDOUT, preexec_fn=_affinity(self.cpus))  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited ({self.proc.returncode}); see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the gateway did not answer /health in {timeout_s:.0f} s; see {self.log_path}")

    def wait_quiet(self, *, max_s: float = 90.0, idle_cores: float = 0.05) -> float:
        """Wait until start-up work (the local agent's model warm-up) has settled; returns seconds waited."""
        from gateway.simulator.load import ProcStat

        assert self.proc is not None
        stat, t0 = ProcStat(self.proc.pid), time.monotonic()
        last = stat.cpu_s()
        while time.monotonic() - t0 < max_s:
            time.sleep(1.0)
            now = stat.cpu_s()
            if now - last < idle_cores:
                break
            last = now
        return time.monotonic() - t0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        _terminate(self.proc)
