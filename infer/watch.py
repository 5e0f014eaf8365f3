"""``cleancodec watch``: score a run's checkpoints with audio metrics, outside the trainer.

The trainer reads latents only and never loads the codec. This separate process does the audio
side: for each new ``best.pt`` (once per step it was written at) and each milestone
``step_<N>.pt`` of a run, it denoises a test set with the codec (``denoise_path``), scores it
against the clean references (``evaluate_dirs``: DNSMOS, PESQ, STOI, SI-SDR, speaker
similarity), and writes:

- ``<run>/eval/eval.jsonl``: one line per scored checkpoint (checkpoint, step, means);
- TensorBoard scalars ``eval/<metric>`` in ``<run>/tensorboard/eval``, the evaluation's
  spectrogram images and a few enhanced clips;
- ``<run>/eval/scores.png``: every metric against the step;
- ``<run>/eval/<name>-step<N>/``: the denoised files and the evaluation report, with its
  listening page ``report.html`` (``infer.report``; ``evaluate.report=false`` turns it off).

It follows a live run (waiting for new checkpoints; it ends when the trainer has released the
run folder and written ``summary.json``) or scores a finished run once (``--once``).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cleancodec.core.atomic import write_bytes_atomic, write_text_atomic
from cleancodec.core.audio import list_audio_files, read_mono
from cleancodec.core.codec import RANDOM, CodecConfig, load_codec
from cleancodec.core.config import load_section
from cleancodec.core.dirlock import holder
from cleancodec.infer.denoise import DenoiseConfig, load_enhancer
from cleancodec.infer.evaluate import EvaluateConfig, evaluate_dirs
from cleancodec.infer.run import denoise_path
from cleancodec.trainer.checkpoint import BEST, BEST_INFO, RUN_CONFIG
from cleancodec.trainer.checkpoint import RUN_SUMMARY as SUMMARY

log = logging.getLogger(__name__)

EVAL_DIR = "eval"
EVAL_LOG = "eval.jsonl"
PLOT_NAME = "scores.png"
TB_SUBDIR = "eval"             # <run>/tensorboard/eval, beside the trainer's own events
MILESTONE_GLOB = "step_*.pt"
CONDITION = "enhanced"
AUDIO_CLIPS = 2                # enhanced clips written to TensorBoard per checkpoint


@dataclass
class WatchResult:
    """What one ``watch_run`` call scored."""

    scored: list[dict[str, Any]]
    plot: Path | None
    log: Path


def _checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint was written at, without loading it (best.json / its name)."""
    if path.name == BEST:
        info = path.with_name(BEST_INFO)
        try:
            return int(json.loads(info.read_text())["step"])
        except (OSError, ValueError, KeyError):
            return None
    stem = path.stem.split("_", 1)[-1]
    return int(stem) if stem.isdigit() else None


def pending(run_dir: Path, done: set[tuple[str, int]]) -> list[tuple[Path, int]]:
    """Checkpoints of ``run_dir`` not scored yet, as ``(path, step)``, oldest step first."""
    found = []
    for path in [run_dir / BEST, *sorted(run_dir.glob(MILESTONE_GLOB))]:
        step = _checkpoint_step(path) if path.is_file() else None
        if step is not None and (path.name, step) not in done:
            found.append((path, step))
    return sorted(found, key=lambda item: (item[1], item[0].name))


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _means(summary: dict[str, Any]) -> dict[str, float]:
    cond = summary.get("conditions", {}).get(CONDITION, {})
    return {k: v["mean"] for k, v in cond.items() if v.get("mean") is not None}


def codec_for_run(run_dir: Path, cfg: CodecConfig) -> CodecConfig:
    """``cfg``, or, when it names no weights and the run was trained on a random-init codec's
    latents, that same random-init codec (seed and architecture from the run's config.json)."""
    if cfg.weights is not None:
        return cfg
    try:
        identity = json.loads((run_dir / RUN_CONFIG).read_text())["codec_identity"]
    except (OSError, ValueError, KeyError):
        return cfg
    if identity.get("kind") != "random-init":
        return cfg
    return replace(cfg, weights=RANDOM, random_seed=int(identity["seed"]),
                   random_arch=identity.get("arch", cfg.random_arch))


def run_finished(run_dir: Path, after: float = 0.0) -> bool:
    """The trainer is gone (no live lock holder) and left its final ``summary.json``, written
    after the time ``after`` (seconds since the epoch; 0: any)."""
    summary = run_dir / SUMMARY
    return (holder(run_dir) is None and summary.is_file()
            and summary.stat().st_mtime >= after)


class _Board:
    """TensorBoard output of the watcher (created on first use)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "tensorboard" / TB_SUBDIR
        self._writer = None

    def write(self, step: int, means: dict[str, float], eval_dir: Path, enhanced: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self._writer is None:
            self._writer = SummaryWriter(str(self.path))
        for key, value in means.items():
            self._writer.add_scalar(f"eval/{key}", value, step)
        import matplotlib.image as mpimg

        for png in sorted((eval_dir / "spectrograms").glob("*.png")):
            image = mpimg.imread(png)[..., :3]
            self._writer.add_image(f"spectrogram/{png.stem}", image, step, dataformats="HWC")
        for wav in list_audio_files(enhanced)[:AUDIO_CLIPS]:
            audio, rate = read_mono(wav)
            self._writer.add_audio(f"audio/{wav.stem}", audio[None], step, rate)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def plot_scores(entries: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per metric: the mean against the step, best.pt and milestones marked apart."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({k for e in entries for k in e["scores"]})
    if not metrics:
        return None
    fig, axes = plt.subplots(len(metrics), 1, figsize=(6, 2.2 * len(metrics)), sharex=True,
                             squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        for kind, marker in (("best", "o"), ("milestone", "s")):
            pts = sorted((e["step"], e["scores"][metric]) for e in entries
                         if e["kind"] == kind and metric in e["scores"])
            if pts:
                ax.plot(*zip(*pts), marker=marker, label=kind)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("training step")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def score_checkpoint(ckpt: Path, step: int, testset: Path, out_dir: Path, codec: Any,
                     denoise_cfg: DenoiseConfig, eval_cfg: EvaluateConfig,
                     progress: bool = False) -> dict[str, Any]:
    """Denoise ``testset/noisy`` with ``ckpt`` into ``out_dir/denoised`` and score it."""
    cfg = replace(denoise_cfg, checkpoint=str(ckpt), bypass=False)
    enhancer = load_enhancer(cfg, codec.cfg, codec=codec)
    enhanced = out_dir / "denoised"
    summary = denoise_path(testset / "noisy", enhanced, enhancer, cfg, progress=progress)
    if summary.failed:
        log.warning("%s: %d file(s) failed to denoise", ckpt, len(summary.failed))
    result = evaluate_dirs(enhanced, out_dir, clean=testset / "clean", cfg=eval_cfg,
                           progress=progress)
    return {"checkpoint": ckpt.name, "step": step,
            "kind": "best" if ckpt.name == BEST else "milestone",
            "scores": _means(result.summary), "n_files": result.summary["n_pairs"],
            "ema": bool(enhancer.info.get("ema")), "dir": str(out_dir),
            "report": str(result.paths["report"]) if result.paths.get("report") else None}


def watch_run(run_dir: str | Path, testset: str | Path, conf: str | Path | None = None,
              overrides: Sequence[str] = (), follow: bool = True, poll_seconds: float = 10.0,
              timeout_seconds: float | None = None, progress: bool = False,
              run_started_after: float = 0.0) -> WatchResult:
    """Score every checkpoint of ``run_dir`` on ``testset`` (``clean/`` + ``noisy/``).

    Parameters
    ----------
    run_dir : str or Path
        A training run folder (``best.pt``, ``best.json``, ``step_<N>.pt``).
    testset : str or Path
        A folder with ``clean/`` and ``noisy/`` audio, paired by name or DNS ``fileid_N``.
    conf, overrides
        Profile and ``codec.`` / ``denoise.`` / ``evaluate.`` overrides (the codec must be the
        one the run's cache was built with).
    follow : bool
        Wait for new checkpoints until the run has finished; ``False``: score what is there.
    poll_seconds, timeout_seconds
        How often to look for new checkpoints; give up waiting after ``timeout_seconds``.
    run_started_after : float
        For a watcher started together with its trainer: the run counts as finished only by a
        ``summary.json`` written after this time (not by one left from an earlier session).
    """
    run_dir, testset = Path(run_dir), Path(testset)
    for sub in ("clean", "noisy"):
        if not (testset / sub).is_dir():
            raise FileNotFoundError(f"{testset / sub}: the test set needs clean/ and noisy/")
    codec_cfg: CodecConfig = load_section(conf, "codec", CodecConfig, overrides)
    denoise_cfg = load_section(conf, "denoise", DenoiseConfig, overrides)
    eval_cfg = load_section(conf, "evaluate", EvaluateConfig, overrides)
    eval_root = run_dir / EVAL_DIR
    log_path = eval_root / EVAL_LOG
    entries = _read_log(log_path)
    done = {(e["checkpoint"], e["step"]) for e in entries}
    board, codec, scored, plot = _Board(run_dir), None, [], None
    started = time.monotonic()
    try:
        while True:
            todo = pending(run_dir, done)
            finished = not follow or run_finished(run_dir, run_started_after)
            for ckpt, step in todo:
                codec = codec or load_codec(codec_for_run(run_dir, codec_cfg))
                out_dir = eval_root / f"{ckpt.stem}-step{step}"
                t0 = time.perf_counter()
                entry = score_checkpoint(ckpt, step, testset, out_dir, codec, denoise_cfg,
                                         eval_cfg, progress)
                entry["seconds"] = round(time.perf_counter() - t0, 2)
                entries.append(entry)
                done.add((entry["checkpoint"], step))
                scored.append(entry)
                write_text_atomic(log_path, "".join(json.dumps(e) + "\n" for e in entries))
                board.write(step, entry["scores"], out_dir, out_dir / "denoised")
                plot = plot_scores(entries, eval_root / PLOT_NAME)
                log.info("%s step %d scored in %.1f s: %s", ckpt.name, step, entry["seconds"],
                         entry["scores"])
            if finished and not pending(run_dir, done):
                break
            if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
                log.warning("%s: stopped waiting after %.0f s", run_dir, timeout_seconds)
                break
            time.sleep(poll_seconds)
    finally:
        board.close()
    if plot is None and entries:
        plot = plot_scores(entries, eval_root / PLOT_NAME)
    return WatchResult(scored, plot, log_path)


def summary_lines(result: WatchResult) -> list[str]:
    """Human-readable lines: one per scored checkpoint, then where the outputs are."""
    lines = []
    for e in result.scored:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in sorted(e["scores"].items())
                           if np.isfinite(v))
        lines.append(f"{e['checkpoint']} step {e['step']} ({e['seconds']:.0f} s): {scores}")
        if e.get("report"):
            lines.append(f"  listening report: {e['report']}")
    if not result.scored:
        lines.append("no new checkpoint to score")
    lines.append(f"scores: {result.log}")
    if result.plot:
        lines.append(f"plot: {result.plot}")
    return lines
