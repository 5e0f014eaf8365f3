"""A training run's folder: the names of its files, its metrics log and ``--restart``.

A run directory holds ``latest.pt`` / ``best.pt`` (+ ``best.json``) / ``step_<N>.pt``,
``metrics.jsonl``, ``tensorboard/``, ``config.json`` and, at the end, ``summary.json``.
:class:`RunLogger` writes the metrics (main rank only) and keeps them matching the weights on
resume; :func:`move_previous_run` moves an old run aside into ``restarted-<time>/``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from cleancodec.core.atomic import write_text_atomic
from cleancodec.trainer import checkpoint as ckpt_io

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = ckpt_io.RUN_CONFIG
SUMMARY_FILE = ckpt_io.RUN_SUMMARY
RESTART_PREFIX = "restarted-"
# best.pt's step, score and codec identity, readable without torch.load (denoise's discovery)
BEST_INFO_FILE = ckpt_io.BEST_INFO
RUN_ARTIFACTS = (ckpt_io.LATEST, ckpt_io.BEST, BEST_INFO_FILE, METRICS_FILE, TENSORBOARD_DIR,
                 CONFIG_FILE, SUMMARY_FILE)


class RunLogger:
    """``metrics.jsonl`` plus TensorBoard scalars, on the main rank only.

    On resume from step ``s`` the records after ``s`` (written by a run that was killed before
    its next checkpoint) are dropped, so the log matches the weights.
    """

    def __init__(self, run_dir: Path, start_step: int, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self._fh = None
        self._tb = None
        if not enabled:
            return
        self._truncate_after(start_step)
        self._fh = open(self.path, "a")
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR),
                                 purge_step=start_step if start_step > 0 else None)

    def _truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line torn by a kill
                continue
        write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Append ``scalars`` at ``step`` to ``metrics.jsonl`` and TensorBoard."""
        if not self.enabled:
            return
        self._fh.write(json.dumps({"step": step, "time": round(time.time(), 3), **scalars}) + "\n")
        self._fh.flush()
        for key, value in scalars.items():
            self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._fh:
            self._fh.close()
        if self._tb:
            self._tb.close()


def move_previous_run(run_dir: Path) -> Path | None:
    """Move the files of a previous run in ``run_dir`` (:data:`RUN_ARTIFACTS` and milestones)
    into a new ``restarted-<time>[-n]/`` folder there; returns it (None: nothing to move)."""
    old = [p for p in run_dir.iterdir()
           if p.name in RUN_ARTIFACTS or (p.name.startswith("step_") and p.suffix == ".pt")]
    if not old:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = run_dir / f"{RESTART_PREFIX}{stamp}", 1
    while dest.exists():
        n += 1
        dest = run_dir / f"{RESTART_PREFIX}{stamp}-{n}"
    dest.mkdir()
    for path in old:
        path.rename(dest / path.name)
    log.info("--restart: previous run moved to %s", dest)
    return dest
