"""A CPU-time budget for one target's work in a refresh, enforced from outside the worker thread.

The refresh runs each target's enrichers and ``decide()`` on a worker thread
shared with every other target of the same Prometheus. A target whose work
never ends (a forecast asked to run for hours, an enricher that loops) must
not hold that thread, the loop, or the process: :class:`Budget` cuts it off.

How: :meth:`Budget.run` registers the calling thread with a deadline in CPU
seconds of that thread (``time.pthread_getcpuclockid``: waiting on a socket
or on the GIL does not count, so a slow Prometheus or a busy machine never
trips it; where the platform has no per-thread CPU clock, wall time is used).
One watchdog thread checks the registered threads every ``tick`` seconds and,
for one over its budget, raises :class:`Cutoff` *in that thread*
(``PyThreadState_SetAsyncExc``): CPython delivers it at the thread's next
bytecode, so a runaway loop in Python code stops within a tick. ``Cutoff``
derives from ``BaseException``, so the ``except Exception`` blocks of the code
being cut off do not swallow it; :meth:`run` turns it into
:class:`BudgetExceeded` for the caller. Work stuck inside one C call (no
bytecode runs) cannot be interrupted this way; it is cut at the call's return,
and meanwhile the refresh lag (``Refresher.lag``) shows it and health reports
it (docs/server.md, "Health").

Races are closed by a lock: the watchdog injects only while the entry is
registered and under the lock the worker takes to unregister, counting
injections; the worker counts deliveries, and an injection not yet delivered
when the work returned is drained before :meth:`run` returns, so a ``Cutoff``
never escapes into unrelated code.

Pinned by ``tests/unit/test_server_refresh.py::test_runaway_target_is_cut_off_by_its_budget_others_refresh``.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("scaler.server.refresh")

T = TypeVar("T")

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class Cutoff(BaseException):
    """Raised inside a worker thread by the watchdog: its budget is spent."""


class BudgetExceeded(Exception):
    """The work passed to :meth:`Budget.run` used more than ``seconds`` of CPU and was cut off."""

    def __init__(self, seconds: float, used: float):
        self.seconds = seconds
        self.used = used
        super().__init__(f"cut off after {used:.2f} s of CPU, over the refresh budget of {seconds:g} s per target")


def _thread_clock(ident: int) -> Callable[[], float]:
    """Seconds of CPU used by thread ``ident`` (wall time where no per-thread CPU clock exists)."""
    try:
        clock_id = time.pthread_getcpuclockid(ident)
        time.clock_gettime(clock_id)
    except (AttributeError, OSError):
        return time.monotonic
    return lambda: time.clock_gettime(clock_id)


class _Entry:
    __slots__ = ("ident", "clock", "start", "seconds", "fired", "caught", "next_fire")

    def __init__(self, ident: int, seconds: float):
        self.ident = ident
        self.clock = _thread_clock(ident)
        self.start = self.clock()
        self.seconds = seconds
        self.fired = 0    # Cutoffs injected (by the watchdog, under the lock)
        self.caught = 0   # Cutoffs delivered (counted by the worker)
        self.next_fire = seconds

    def used(self) -> float:
        return self.clock() - self.start


class Budget:
    """Per-call CPU budgets for worker threads; ``start()`` the watchdog, ``stop()`` it."""

    def __init__(self, seconds: float, *, tick: float = 0.05):
        if not seconds > 0:
            raise ValueError(f"budget must be > 0 seconds, got {seconds!r}")
        self.seconds = seconds
        self.tick = tick
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="refresh-budget", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the watchdog, cutting off whatever work is still running (a stopping server waits for none)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        with self._lock:
            for entry in self._entries.values():
                self._fire(entry)

    @property
    def watching(self) -> bool:
        return self._thread is not None

    def run(self, work: Callable[[], T]) -> T:
        """``work()``, cut off with :class:`BudgetExceeded` once it used ``seconds`` of this thread's CPU.

        Without a started watchdog, ``work()`` runs unbounded (synchronous tests with a fake clock).
        """
        if self._thread is None:
            return work()
        entry = _Entry(threading.get_ident(), self.seconds)
        with self._lock:
            self._entries[entry.ident] = entry
        try:
            try:
                return work()
            except Cutoff:
                entry.caught += 1
                raise BudgetExceeded(self.seconds, entry.used()) from None
            finally:
                self._disarm(entry)
        except Cutoff:  # delivered between work() and the end of _disarm
            entry.caught += 1
            self._disarm(entry)
            raise BudgetExceeded(self.seconds, entry.used()) from None

    def _disarm(self, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(entry.ident, None)
        self._drain(entry)

    @staticmethod
    def _drain(entry: _Entry) -> None:
        """Let an injected but not yet delivered Cutoff arrive here, where it is harmless."""
        spins = 0
        while entry.fired > entry.caught and spins < 1_000_000:
            try:
                for _ in range(1000):  # bytecodes: CPython delivers the pending exception between them
                    spins += 1
            except Cutoff:
                entry.caught += 1
        if entry.fired > entry.caught:
            log.error("refresh budget: an injected cut-off was not delivered", extra={"fields": {
                "thread": entry.ident}})

    def _watch(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                for entry in list(self._entries.values()):
                    if entry.used() >= entry.next_fire:
                        # Fire again a budget later if the work swallowed it.
                        self._fire(entry)
                        entry.next_fire += self.seconds

    @staticmethod
    def _fire(entry: _Entry) -> None:
        """Inject one Cutoff into the entry's thread (at most one pending at a time). Call under the lock."""
        if entry.fired == entry.caught and _set_async_exc(entry.ident, Cutoff) == 1:
            entry.fired += 1
