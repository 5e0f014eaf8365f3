"""Stopping on a signal without losing work: SIGINT (Ctrl-C), SIGTERM (what SLURM and
Kubernetes send before preemption) and SIGUSR1 (some clusters' warning) set a flag that the
stage checks between units of work (a training step, a cache shard, a denoised file); the stage
then finishes the unit in flight, saves, and exits with the conventional code ``128 + signal``.
A second Ctrl-C aborts at once.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
SIGNAL_EXIT_BASE = 128  # shells report death by signal N as exit status 128 + N


class StopRequested(Exception):  # noqa: N818  (a request, not an error)
    """Raised by a stage after it saved its state because a stop signal arrived."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT_BASE + self.signum


class GracefulStop:
    """``with GracefulStop() as stop: ... if stop.requested: save and leave``.

    Installs handlers for :data:`SIGNALS` in the main thread (elsewhere it only watches, as
    Python delivers signals to the main thread alone) and restores the previous ones on exit.
    The first signal sets :attr:`requested`; a second SIGINT raises ``KeyboardInterrupt`` at
    once, the usual way out for an impatient user.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def request(self, signum: int) -> None:
        """Ask for a stop as if ``signum`` had arrived (other ranks' stop, tests)."""
        if self.signum is None:
            self.signum = int(signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.request(signum)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def stop(self, what: str) -> StopRequested:
        """The exception to raise once the state is saved; ``what`` says what was kept."""
        return StopRequested(self.signum or signal.SIGTERM,
                             f"stopped by {self.name or 'a signal'}: {what}")
