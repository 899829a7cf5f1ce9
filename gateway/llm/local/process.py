"""The engine pool's worker processes: how one is started, watched and killed.

:class:`WorkerProcess` starts a fresh interpreter with ``subprocess`` that runs
:func:`gateway.llm.local.worker.serve_fd` on an inherited pipe descriptor; :class:`NoProcess`
stands in for a slot whose process could not be started. Both answer the same questions
(``pid``, ``exitcode``, ``is_alive``, ``kill``, ``join``), so the pool treats them alike.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

__all__ = ["WorkerProcess", "NoProcess"]


class WorkerProcess:
    """A worker process: a fresh interpreter (``subprocess``, no fork of this process and its
    event loop and threads) running :func:`gateway.llm.local.worker.serve_fd` on an inherited
    pipe. Unlike ``multiprocessing``'s spawn, it never re-imports the parent's ``__main__``,
    so an app created at the top of an unguarded script does not start again in each worker.
    """

    _BOOT = "import sys; sys.path[:0] = sys.argv[2:]; from gateway.llm.local.worker import serve_fd; serve_fd(int(sys.argv[1]))"

    def __init__(self, popen: subprocess.Popen) -> None:
        self._popen = popen
        self.pid = popen.pid

    @classmethod
    def start(cls, fd: int) -> WorkerProcess:
        """Start a worker that talks over the inheritable descriptor ``fd``."""
        argv = [sys.executable, "-c", cls._BOOT, str(fd), *[p for p in sys.path if p]]
        return cls(subprocess.Popen(argv, pass_fds=(fd,), stdin=subprocess.DEVNULL))

    @property
    def exitcode(self) -> int | None:
        """``None`` while running; else the exit status (``-N``: killed by signal N)."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.kill()

    def join(self, timeout_s: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout_s)


class NoProcess:
    """The process of a slot whose worker could not be started (``EAGAIN``, ``EMFILE``): never
    alive, so the supervisor tries again after a back-off."""

    pid = None
    exitcode = None

    def is_alive(self) -> bool:
        return False

    def kill(self) -> None:
        return None

    def join(self, timeout_s: float) -> None:
        return None
