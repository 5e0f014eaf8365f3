"""Training with the watcher beside it: ``cleancodec train --watch DIR`` starts
``cleancodec watch RUN --testset DIR`` as a child process that scores the run's checkpoints with
audio metrics while the trainer runs (:mod:`cleancodec.infer.watch`).

The watcher is a separate process so that the trainer itself never loads the codec; this module
only launches it (``python -m cleancodec watch ...``), stops it when training fails, and waits
for it to score the last checkpoints when training ends.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cleancodec.core.topology import is_main_process

if TYPE_CHECKING:
    from cleancodec.trainer.config import TrainConfig

WATCH_POLL_SECONDS = 5.0  # how often the watcher started by `train --watch` looks for checkpoints


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class WatchOptions:
    """What the watcher beside a training run scores, and with what.

    ``testset``: folder with ``clean/`` and ``noisy/`` audio; ``conf``: the watcher's profile
    (``codec`` / ``denoise`` / ``evaluate`` sections); ``codec``: ``"random"`` or a DAC weights
    path (None: the run's random-init codec, else dac's cached weights).
    """

    testset: str
    conf: str | None = None
    codec: str | None = None


def watch_command(run_dir: str | Path, options: WatchOptions,
                  started_after: float) -> list[str]:
    """The command line of the watcher following ``run_dir`` (only a ``summary.json`` newer
    than the epoch time ``started_after`` ends it)."""
    cmd = [sys.executable, "-m", "cleancodec", "watch", str(run_dir), "--testset",
           str(options.testset), "--poll", str(WATCH_POLL_SECONDS), "--started-after",
           str(started_after)]
    if options.conf:
        cmd += ["--conf", str(options.conf)]
    if options.codec:
        cmd += ["--codec", str(options.codec)]
    return cmd


class Watcher:
    """``with Watcher(run_dir, options) as w: train; w.finish()``: the watcher process.

    Entering starts it (announced through ``say``); leaving with an exception terminates it
    (a failed or stopped run has nothing more to score); :meth:`finish` waits for it to score
    the last checkpoints after a run that ended well.
    """

    def __init__(self, run_dir: str | Path, options: WatchOptions,
                 say: Callable[[str], None] = _stderr):
        self.run_dir, self.options, self.say = run_dir, options, say
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Watcher:
        cmd = watch_command(self.run_dir, self.options, time.time())
        self.say(f"watcher: {' '.join(cmd[2:])}")
        self.process = subprocess.Popen(cmd)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.stop()

    def stop(self) -> None:
        """Terminate the watcher if it still runs, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()

    def finish(self) -> int:
        """Wait for the watcher to score the run's last checkpoints; returns its exit status
        (a failure is reported through ``say``: the run itself is fine)."""
        self.say("training done; the watcher is scoring the last checkpoints …")
        code = self.process.wait()
        if code != 0:
            self.say(f"the watcher failed (exit {code}); the run itself is fine")
        return code


def fit_watched(cfg: TrainConfig, cache_dir: str | Path, run_dir: str | Path, restart: bool = False,
                watch: WatchOptions | None = None,
                say: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """:func:`cleancodec.trainer.loop.fit` with, when ``watch`` is given, the watcher following
    the run from the main process (see :class:`Watcher`). Returns ``fit``'s metrics once the
    watcher has finished too; its failure does not fail the run."""
    from cleancodec.trainer.loop import fit

    if watch is None or not is_main_process():
        return fit(cfg, cache_dir, run_dir, restart=restart)
    with Watcher(run_dir, watch, say) as watcher:
        result = fit(cfg, cache_dir, run_dir, restart=restart)
    watcher.finish()
    return result
