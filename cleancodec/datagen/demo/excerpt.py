"""``make demo``'s test-set excerpt: the first clean/noisy pairs of the demo corpus's test set.

The demo denoises and scores only ``demo.testset_clips`` clips of the DNS-style test set
(``<corpus>/testset/{clean,noisy}``, paired by ``fileid``: ``pipeline.dns``), so its denoise
and evaluate steps fit the time budget on a CPU. They are copied into ``OUT/clean`` and
``OUT/noisy``; each copy is atomic (``pipeline.atomic``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from cleancodec.core.atomic import atomic_path
from cleancodec.core.config import load_section
from cleancodec.core.dns import pair_by_fileid
from cleancodec.datagen.demo.config import DemoConfig
from cleancodec.datagen.demo.testset import TESTSET_DIR

CLEAN_DIR, NOISY_DIR = "clean", "noisy"


def _copy(src: Path, target: Path) -> None:
    """Copy ``src`` to ``target`` atomically, unless ``target`` has the same size already."""
    if target.is_file() and target.stat().st_size == src.stat().st_size:
        return
    with atomic_path(target) as tmp:
        shutil.copyfile(src, tmp)


def copy_testset(corpus: str | Path, out: str | Path, clips: int) -> list[str]:
    """Copy the first ``clips`` (0 = all) clean/noisy pairs by fileid; returns the noisy names.

    Files already present with the same size are kept. Raises FileNotFoundError when the corpus
    has no test set.
    """
    src = Path(corpus) / TESTSET_DIR
    pairs = pair_by_fileid(src / CLEAN_DIR, src / NOISY_DIR)
    if not pairs:
        raise FileNotFoundError(f"{src}: no clean/noisy pairs (build it with `make demo-data`)")
    chosen = pairs[:clips] if clips else pairs
    for clean, noisy in chosen:
        _copy(clean, Path(out) / CLEAN_DIR / clean.name)
        _copy(noisy, Path(out) / NOISY_DIR / noisy.name)
    return [noisy.name for _, noisy in chosen]


def run_testset_excerpt(out: str | Path, corpus: str | Path = "data/demo",
                        conf: str | Path | None = None) -> list[str]:
    """The ``demo testset`` step: :func:`copy_testset` with ``demo.testset_clips`` of ``conf``."""
    cfg = load_section(conf, "demo", DemoConfig)
    return copy_testset(corpus, out, cfg.testset_clips)


__all__ = ["copy_testset", "run_testset_excerpt"]
