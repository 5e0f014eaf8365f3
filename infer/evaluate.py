"""Evaluate enhanced speech: metrics per file, summary with 95% CIs, a README table, PNGs.

``evaluate_dirs(enhanced, out, clean=..., noisy=...)`` pairs files (``infer.testset``), scores
every pair in parallel (``infer.metrics``: DNSMOS, PESQ-WB, STOI, SI-SDR, speaker similarity)
and writes into ``out``:

- ``per_file.csv``  one row per enhanced file; columns ``<condition>_<metric>``;
- ``summary.json``  per condition and metric: mean, 95% confidence half-width (Student t), n;
  plus the unmatched files and the inputs;
- ``results.md``    the summary as a markdown table (mean ± CI), ready for a README: every
  metric's column, or the set one benchmark reports (``evaluate.table``: ``voicebank``, ``dns``);
- ``spectrograms/<name>.png``  clean / noisy / enhanced on one colour scale, for a few files
  (the best, median and worst by the enhanced PESQ, or DNSMOS OVRL without references);
- ``report.html`` + ``report/``  the listening report (``infer.report``), unless
  ``evaluate.report=false``;
- ``compare_<name>.png``  with ``evaluate.compare``: the run beside published results
  (``infer.published``).

Conditions: ``enhanced`` (and ``noisy``, the baseline, when given) against ``clean``; ``clean``
itself gets DNSMOS (the ceiling). Without ``clean`` (real recordings) only DNSMOS is computed.
Audio is read as mono 16 kHz (``pipeline.audio.read_audio``); a pair's signals are cut to the
shorter length. When the enhanced folder was made with a random-init codec (its
``cleancodec_denoise.json`` says so) every output starts with that warning.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cleancodec.core.atomic import write_bytes_atomic, write_text_atomic
from cleancodec.core.audio import AudioError, read_audio
from cleancodec.core.codec import RANDOM_INIT_BANNER
from cleancodec.core.config import load_section, require, to_dict
from cleancodec.core.oserrors import named_os_errors
from cleancodec.infer.metrics import ALL_METRICS, COLUMNS, SAMPLE_RATE, SpeakerEncoder, score
from cleancodec.infer.published import benchmark_names, load_benchmark, write_comparison
from cleancodec.infer.run import REPORT_NAME
from cleancodec.infer.testset import Pair, Pairing, pair_files

log = logging.getLogger(__name__)

CONDITIONS = ("noisy", "enhanced", "clean")
CI_LEVEL = 0.95
MAX_AUTO_WORKERS = 4
FILES_PER_WORKER = 8  # auto mode starts another worker process per this many pairs
CSV_NAME, SUMMARY_NAME, TABLE_NAME, SPEC_DIR = ("per_file.csv", "summary.json", "results.md",
                                                "spectrograms")
# evaluate.table → the columns of results.md, in order (None: every metric computed)
TABLES: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "voicebank": ("pesq", "csig", "cbak", "covl", "stoi"),
    "dns": ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808", "pesq", "stoi", "si_sdr",
            "spk_sim"),
}
DEFAULT_TABLE = "all"


@dataclass
class EvaluateConfig:
    """The ``evaluate`` section of a profile.

    metrics: any of ``dnsmos``, ``pesq``, ``stoi``, ``si_sdr``, ``spk_sim``, ``composite``
    (LLR, WSS, segSNR, CSIG, CBAK, COVL).
    dnsmos_personalized: DNSMOS's personalised models (default: the standard ones).
    score_clean: DNSMOS of the clean references too (the ceiling row).
    workers: processes scoring files; 0 = auto (one per ~8 files, at most 4 and the CPUs).
    spectrograms: how many files get a spectrogram PNG (0 = none).
    spectrogram_files: explicit enhanced relative paths to plot instead of the automatic pick.
    n_fft / hop / db_range: spectrogram STFT size, hop (samples at 16 kHz) and colour range.
    table: the columns of ``results.md``: ``all`` (every metric computed), ``voicebank`` (PESQ,
    CSIG, CBAK, COVL, STOI) or ``dns`` (DNSMOS SIG / BAK / OVRL, P.808, PESQ, STOI, SI-SDR,
    speaker similarity).
    report: write ``report.html`` (listening report, ``infer.report``) into the output folder.
    report_files: above 3 × this many files the report holds this many worst, median and best.
    compare: a benchmark of ``infer/published.yaml`` (``dns2020-no-reverb``, ``voicebank``): draw
    this run beside its published results (``compare_<name>.png``).
    same_testset: declare the test set is the benchmark's own (else the chart says it is not).
    """

    metrics: list[str] = field(default_factory=lambda: list(ALL_METRICS))
    dnsmos_personalized: bool = False
    score_clean: bool = True
    workers: int = 0
    spectrograms: int = 3
    spectrogram_files: list[str] = field(default_factory=list)
    n_fft: int = 512
    hop: int = 128
    db_range: float = 80.0
    table: str = DEFAULT_TABLE
    report: bool = True
    report_files: int = 50
    compare: str | None = None
    same_testset: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(ALL_METRICS))
        require(not unknown, "evaluate.metrics", f"holds unknown {unknown}; known "
                f"{list(ALL_METRICS)}")
        for name in ("workers", "spectrograms"):
            require(getattr(self, name) >= 0, f"evaluate.{name}",
                    f"must be ≥ 0, got {getattr(self, name)}")
        require(self.table in TABLES, "evaluate.table",
                f"is {self.table!r}; known {list(TABLES)}")
        require(self.report_files >= 1, "evaluate.report_files",
                f"must be ≥ 1, got {self.report_files}")
        require(self.compare is None or self.compare in benchmark_names(), "evaluate.compare",
                f"names no published results: {self.compare!r}; known {benchmark_names()}")


@dataclass
class EvaluationResult:
    """What ``evaluate_dirs`` produced: rows, summary dict, table text and written paths."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    table: str
    paths: dict[str, Any]


# --- scoring one pair (runs in worker processes) ----------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(cfg: EvaluateConfig, with_reference: bool) -> None:
    """Per-process set-up: one torch thread, quiet warnings, the speaker encoder once."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    _WORKER["cfg"] = cfg
    _WORKER["speaker"] = SpeakerEncoder() if with_reference and "spk_sim" in cfg.metrics \
        else None


def _read(path: Path | None) -> np.ndarray | None:
    return None if path is None else read_audio(path, SAMPLE_RATE, allow_silent=True)


def score_pair(pair: Pair) -> dict[str, Any]:
    """All metrics of one pair → a CSV row (``<condition>_<metric>`` columns, ``notes``)."""
    cfg: EvaluateConfig = _WORKER["cfg"]
    metrics = tuple(cfg.metrics)
    row: dict[str, Any] = {"file": pair.key, "clean": str(pair.clean or ""),
                           "noisy": str(pair.noisy or "")}
    notes: list[str] = []
    try:
        enhanced, clean, noisy = _read(pair.enhanced), _read(pair.clean), _read(pair.noisy)
    except AudioError as exc:
        row["error"] = str(exc)
        return row
    conditions = [("enhanced", enhanced, clean)]
    if noisy is not None:
        conditions.insert(0, ("noisy", noisy, clean))
    if clean is not None and cfg.score_clean and "dnsmos" in metrics:
        conditions.append(("clean", clean, None))
    for name, wave, ref in conditions:
        ms = metrics if ref is not None else tuple(m for m in metrics if m == "dnsmos")
        scores = score(wave, ref, ms, _WORKER["speaker"], cfg.dnsmos_personalized)
        row.update({f"{name}_{k}": v for k, v in scores.values.items()})
        notes += [f"{name} {n}" for n in scores.notes]
    if clean is not None and abs(len(clean) - len(enhanced)) > SAMPLE_RATE // 100:
        notes.append(f"lengths differ: clean {len(clean)}, enhanced {len(enhanced)} samples")
    row["notes"] = "; ".join(notes)
    return row


def _auto_workers(n_pairs: int, requested: int) -> int:
    if requested:
        return requested
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS, math.ceil(n_pairs / FILES_PER_WORKER)))


def score_pairs(pairs: list[Pair], cfg: EvaluateConfig, with_reference: bool,
                progress: bool = True) -> list[dict[str, Any]]:
    """Score every pair (in worker processes when more than one worker); rows in pair order."""
    workers = _auto_workers(len(pairs), cfg.workers)
    bar = tqdm(total=len(pairs), unit="file", desc="evaluate", disable=not progress)
    rows: list[dict[str, Any] | None] = [None] * len(pairs)
    try:
        if workers == 1:
            _init_worker(cfg, with_reference)
            for i, pair in enumerate(pairs):
                rows[i] = score_pair(pair)
                bar.update(1)
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                     initializer=_init_worker,
                                     initargs=(cfg, with_reference)) as pool:
                futures = {pool.submit(score_pair, p): i for i, p in enumerate(pairs)}
                for fut in as_completed(futures):
                    rows[futures[fut]] = fut.result()
                    bar.update(1)
    finally:
        bar.close()
    return [r for r in rows if r is not None]


# --- summary ----------------------------------------------------------------------------------


def mean_ci(values: list[float], level: float = CI_LEVEL) -> dict[str, Any]:
    """Mean, Student-t confidence half-width and count of the finite values (None if n < 2)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = None
    if n > 1:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": float(x.mean()), "ci95": half, "n": n}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """condition → metric column → ``mean_ci`` over the rows that have it."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for cond in CONDITIONS:
        for col in COLUMNS:
            key = f"{cond}_{col}"
            vals = [r[key] for r in rows if key in r]
            if vals:
                out.setdefault(cond, {})[col] = mean_ci(vals)
    return out


def markdown_table(stats: dict[str, dict[str, dict[str, Any]]], banner: str | None = None,
                   columns: Sequence[str] | None = None) -> str:
    """The summary as a markdown table: one row per condition, ``mean ± ci`` cells.

    ``columns``: these metric columns in this order (``–`` where a metric was not computed);
    default: every column some condition has. A condition with none of them gets no row.
    """
    if columns is None:
        cols = [c for c in COLUMNS if any(c in stats.get(cond, {}) for cond in CONDITIONS)]
    else:
        cols = list(columns)
    lines = [f"> **{banner}**", ""] if banner else []
    lines.append("| | " + " | ".join(COLUMNS[c] for c in cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for cond in CONDITIONS:
        if not any(c in stats.get(cond, {}) for c in cols):
            continue
        cells = []
        for c in cols:
            s = stats[cond].get(c)
            if not s or s["mean"] is None:
                cells.append("–")
            elif s["ci95"] is None:
                cells.append(f"{s['mean']:.3f}")
            else:
                cells.append(f"{s['mean']:.3f} ± {s['ci95']:.3f}")
        n = max((stats[cond][c]["n"] for c in cols if c in stats[cond]), default=0)
        lines.append(f"| {cond} (n={n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- spectrograms -----------------------------------------------------------------------------


def pick_spectrogram_files(rows: list[dict[str, Any]], cfg: EvaluateConfig) -> list[str]:
    """Enhanced keys to plot: the configured ones, else best / median / worst by a metric."""
    if cfg.spectrogram_files:
        return list(cfg.spectrogram_files)
    if cfg.spectrograms == 0 or not rows:
        return []
    for metric in ("enhanced_pesq", "enhanced_dnsmos_ovrl"):
        scored = [r for r in rows if np.isfinite(r.get(metric, float("nan")))]
        if scored:
            break
    else:
        scored = [r for r in rows if "error" not in r]
        metric = None
    if metric:
        scored.sort(key=lambda r: r[metric], reverse=True)
    idx = np.linspace(0, len(scored) - 1, min(cfg.spectrograms, len(scored)))
    return list(dict.fromkeys(scored[round(i)]["file"] for i in idx))


def _db_spectrogram(wave: np.ndarray, cfg: EvaluateConfig) -> np.ndarray:
    from scipy.signal import stft

    _, _, spec = stft(wave, fs=SAMPLE_RATE, nperseg=cfg.n_fft, noverlap=cfg.n_fft - cfg.hop)
    return 20.0 * np.log10(np.abs(spec) + 1e-10)


def plot_spectrograms(waves: dict[str, np.ndarray], title: str, cfg: EvaluateConfig,
                      banner: str | None = None) -> bytes:
    """PNG bytes of the given waves' spectrograms stacked, sharing one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = {k: _db_spectrogram(w, cfg) for k, w in waves.items()}
    vmax = max(float(s.max()) for s in specs.values())
    vmin = vmax - cfg.db_range
    fig, axes = plt.subplots(len(specs), 1, figsize=(10, 2.6 * len(specs)), sharex=True,
                             squeeze=False)
    image = None
    for ax, (name, spec) in zip(axes[:, 0], specs.items()):
        seconds = spec.shape[1] * cfg.hop / SAMPLE_RATE
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                          extent=(0.0, seconds, 0.0, SAMPLE_RATE / 2000))
        ax.set_ylabel(f"{name}\nkHz")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle((banner + "\n" if banner else "") + title, fontsize=9)
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", pad=0.01)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_spectrograms(pairs: list[Pair], keys: list[str], rows: list[dict[str, Any]],
                       out_dir: Path, cfg: EvaluateConfig, banner: str | None) -> list[Path]:
    """One PNG per chosen key under ``out_dir``; returns the paths written."""
    by_key = {p.key: p for p in pairs}
    row_by_key = {r["file"]: r for r in rows}
    written = []
    for key in keys:
        pair = by_key.get(key)
        if pair is None:
            log.warning("spectrogram: %s is not among the evaluated files", key)
            continue
        try:
            waves = {name: _read(path) for name, path in
                     (("clean", pair.clean), ("noisy", pair.noisy), ("enhanced", pair.enhanced))
                     if path is not None}
        except AudioError as exc:
            log.warning("spectrogram skipped: %s", exc)
            continue
        row = row_by_key.get(key, {})
        facts = [f"{COLUMNS[c]} {row[f'enhanced_{c}']:.2f}" for c in ("pesq", "dnsmos_ovrl")
                 if np.isfinite(row.get(f"enhanced_{c}", float("nan")))]
        png = plot_spectrograms(waves, f"{key}   " + ", ".join(facts), cfg, banner)
        name = key.replace("/", "__").rsplit(".", 1)[0] + ".png"
        written.append(write_bytes_atomic(out_dir / name, png))
    return written


# --- the stage --------------------------------------------------------------------------------


def random_codec_banner(enhanced_dir: str | Path) -> str | None:
    """The random-init warning when the enhanced folder's denoise report carries it."""
    report = Path(enhanced_dir) / REPORT_NAME
    if not report.is_file():
        return None
    try:
        data = json.loads(report.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("warning") or data.get("enhancer", {}).get("codec_random_init"):
        return RANDOM_INIT_BANNER
    return None


def _csv_text(rows: list[dict[str, Any]], banner: str | None) -> str:
    fields = ["file", "clean", "noisy"]
    for cond in CONDITIONS:
        fields += [f"{cond}_{c}" for c in COLUMNS if any(f"{cond}_{c}" in r for r in rows)]
    fields += ["notes", "error"]
    buf = io.StringIO()
    if banner:
        buf.write(f"# {banner}\n")
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def evaluate_dirs(enhanced: str | Path, out: str | Path, clean: str | Path | None = None,
                  noisy: str | Path | None = None, cfg: EvaluateConfig | None = None,
                  progress: bool = True,
                  codec_alone: str | Path | None = None) -> EvaluationResult:
    """Score ``enhanced`` against ``clean`` (and ``noisy``) and write the report into ``out``.

    Without ``clean`` only DNSMOS is computed (reference-free mode). ``codec_alone``: files
    decoded by the codec alone (``denoise --bypass``, same relative paths), heard and plotted in
    ``report.html``, not scored. Raises FileNotFoundError for a missing folder and ValueError
    when nothing could be paired.
    """
    cfg = cfg or EvaluateConfig()
    out = Path(out)
    pairing: Pairing = pair_files(enhanced, clean, noisy)
    if not pairing.pairs:
        raise ValueError(f"{enhanced}: no enhanced file could be paired with {clean} "
                         f"(unmatched: {pairing.enhanced_without_clean[:5]}…)")
    for rel in pairing.enhanced_without_clean:
        log.warning("no clean reference for %s (not scored)", rel)
    banner = random_codec_banner(enhanced)
    rows = score_pairs(pairing.pairs, cfg, clean is not None, progress)
    stats = summarize(rows)
    table = markdown_table(stats, banner, TABLES[cfg.table])
    summary: dict[str, Any] = {"warning": banner} if banner else {}
    summary.update({
        "conditions": stats,
        "n_pairs": len(pairing.pairs),
        "failed": {r["file"]: r["error"] for r in rows if "error" in r},
        "unmatched": pairing.unmatched(),
        "inputs": {"enhanced": str(enhanced), "clean": str(clean) if clean else None,
                   "noisy": str(noisy) if noisy else None},
        "config": to_dict(cfg),
        "reference_free": clean is None,
    })
    paths: dict[str, Any] = {
        "csv": write_text_atomic(out / CSV_NAME, _csv_text(rows, banner)),
        "summary": write_text_atomic(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n"),
        "table": write_text_atomic(out / TABLE_NAME, table),
    }
    keys = pick_spectrogram_files(rows, cfg)
    paths["spectrograms"] = write_spectrograms(pairing.pairs, keys, rows, out / SPEC_DIR, cfg,
                                               banner)
    paths.update(_write_extras(out, rows, stats, pairing, cfg, banner, codec_alone))
    return EvaluationResult(rows, summary, table, paths)


def _write_extras(out: Path, rows: list[dict[str, Any]], stats: dict[str, Any],
                  pairing: Pairing, cfg: EvaluateConfig, banner: str | None,
                  codec_alone: str | Path | None) -> dict[str, Path | None]:
    """The comparison chart (``cfg.compare``) and the listening report (``cfg.report``)."""
    from cleancodec.infer.report import write_report

    chart, citations = None, []
    if cfg.compare:
        chart = write_comparison(out, cfg.compare, stats, len(rows), cfg.same_testset, banner)
        citations = [f"{s.name}: {s.citation()}" for s in load_benchmark(cfg.compare).systems]
    report = None
    if cfg.report:
        report = write_report(out, rows, stats, pairing.pairs, cfg.report_files, cfg.n_fft,
                              cfg.hop, cfg.db_range, banner, codec_alone, chart, citations)
    return {"compare": chart, "report": report}




def run_evaluate(enhanced: str | Path, out: str | Path, clean: str | Path | None = None,
                 noisy: str | Path | None = None, conf: str | Path | None = None,
                 overrides: Sequence[str] = (),
                 progress: bool = True,
                 codec_alone: str | Path | None = None) -> EvaluationResult:
    """Load the profile's ``evaluate`` section and ``evaluate.key=value`` overrides, evaluate."""
    cfg = load_section(conf, "evaluate", EvaluateConfig, overrides)
    with named_os_errors(out):
        return evaluate_dirs(enhanced, out, clean=clean, noisy=noisy, cfg=cfg, progress=progress,
                             codec_alone=codec_alone)


__all__ = ["TABLES",
           "EvaluateConfig", "EvaluationResult", "evaluate_dirs", "markdown_table", "mean_ci",
           "pick_spectrogram_files", "random_codec_banner", "run_evaluate", "score_pair",
           "score_pairs", "summarize"]
