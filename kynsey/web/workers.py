"""``kynsey serve --workers N``: N processes serving one listening socket (SPEC N5).

The parent checks everything and binds the socket (``kynsey.commands.serve``),
then forks N workers; each builds its own runtime (database pool, backends,
limiter, background tasks) after the fork, so nothing with a thread, a loop or
a connection crosses it, and serves the inherited socket with ``KynseyServer``:
the kernel hands each new connection to one of them. The parent only supervises:

- SIGTERM or Ctrl+C: each worker gets SIGTERM and shuts down as one process
  does (running replies get ``KYNSEY_SHUTDOWN_GRACE``, then are saved
  'interrupted'); a second Ctrl+C makes them quit at once; a worker still there
  after the bound is killed (its replies are left to the recovery sweep).
- A worker that dies after it started (killed, out of memory) is replaced; one
  that never started stops the whole service with exit status 1. A worker that
  dies young (within ``YOUNG_SECONDS``) is replaced after a pause that doubles
  with each such death in a row, from ``FIRST_PAUSE`` to ``LONGEST_PAUSE``: a
  worker that crashes as it starts serving is not forked ten times a second.
- Workers run in their own process group, so a terminal's Ctrl+C reaches the
  parent alone (which forwards it once, not twice), and each watches a pipe
  from the parent: should the parent die without a word (SIGKILL), the workers
  shut down as on SIGTERM instead of serving on as orphans.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("kynsey")
NEVER_STARTED = 3  # a worker's exit status when it did not get to serve (uvicorn's STARTUP_FAILURE)
POLL_SECONDS = 0.1
KILL_MARGIN = 5.0  # beyond a worker's own shutdown bound, before the parent kills it
YOUNG_SECONDS = 30.0  # a worker that served less long died young: maybe a crash loop
FIRST_PAUSE = 0.5  # before replacing a worker that died young; doubled for each such death in a row
LONGEST_PAUSE = 30.0


class Workers:
    """Fork ``count`` processes that each call ``serve_one(sock, watch_parent)`` and supervise them.

    ``serve_one`` serves ``sock`` until told to stop and returns whether it started; it passes
    ``watch_parent`` the function that stops it, to be called should the parent die."""

    def __init__(self, count: int, sock: socket.socket, serve_one: Callable[[socket.socket, Callable], bool],
                 shutdown_bound: float) -> None:
        self.count = count
        self.sock = sock
        self.serve_one = serve_one
        self.shutdown_bound = shutdown_bound + KILL_MARGIN
        self.pids: dict[int, float] = {}  # pid -> when it was forked
        self.due: list[float] = []  # when replacements are to be forked, soonest first
        self.pause = 0.0  # before the next replacement of a worker that died young
        self.stopping_since: float | None = None
        self.failed = False
        self._alive_r, self._alive_w = os.pipe()  # the workers' line to the parent: EOF when it is gone

    def run(self) -> bool:
        """Serve until stopped; False when a worker never started."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for _ in range(self.count):
            self._fork()
        while self.pids or (self.due and self.stopping_since is None):
            self._reap()
            self._replace()
            if self.stopping_since is not None and time.monotonic() - self.stopping_since > self.shutdown_bound:
                self._send(signal.SIGKILL)
            time.sleep(POLL_SECONDS)
        os.close(self._alive_w)
        return not self.failed

    def _on_signal(self, sig: int, _frame) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            log.info("stopping %d workers", len(self.pids))
            self._send(signal.SIGTERM)
        elif sig == signal.SIGINT:  # a second Ctrl+C: quit now, as one process does
            self._send(signal.SIGINT)

    def _send(self, sig: int) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        for pid in list(self.pids):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
            lived = time.monotonic() - self.pids.pop(pid)
            if self.stopping_since is not None:
                continue
            if os.waitstatus_to_exitcode(status) == NEVER_STARTED:
                log.error("worker %d did not start; stopping the others", pid)
                self.failed = True
                self._on_signal(signal.SIGTERM, None)
            else:
                self.pause = 0.0 if lived >= YOUNG_SECONDS else min(max(2 * self.pause, FIRST_PAUSE), LONGEST_PAUSE)
                log.warning("worker %d ended (exit status %d) after %.1f s; starting another in %.1f s",
                            pid, os.waitstatus_to_exitcode(status), lived, self.pause)
                bisect.insort(self.due, time.monotonic() + self.pause)

    def _replace(self) -> None:
        """Fork the replacements that are due."""
        while self.due and self.due[0] <= time.monotonic() and self.stopping_since is None:
            self.due.pop(0)
            self._fork()

    def _fork(self) -> None:
        pid = os.fork()
        if pid:
            self.pids[pid] = time.monotonic()
            return
        code = NEVER_STARTED
        try:  # the worker: never returns into the parent's code
            os.setpgid(0, 0)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            os.close(self._alive_w)
            started = self.serve_one(self.sock, ParentWatch(self._alive_r).then)
            code = 0 if started else NEVER_STARTED
        except BaseException:  # a worker must end here whatever happened
            log.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)


class ParentWatch:
    """In a worker, from the moment it is forked: act once the parent is gone (its end of the pipe
    closes). Until the worker serves, that act is to exit at once (nothing is served yet, so
    nothing is lost); ``then(on_gone)`` replaces it with the server's own shutdown."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._gone = False
        self._on_gone: Callable[[], None] = functools.partial(os._exit, 0)
        threading.Thread(target=self._watch, name="kynsey-parent-watch", daemon=True).start()

    def _watch(self) -> None:
        while os.read(self._fd, 1):  # blocks; nothing is ever written, so it returns only at EOF
            pass
        with self._lock:
            self._gone = True
            on_gone = self._on_gone
        on_gone()

    def then(self, on_gone: Callable[[], None]) -> None:
        with self._lock:
            self._on_gone, gone = on_gone, self._gone
        if gone:  # it went while this worker was starting
            on_gone()
