"""ONNX layer forms against the plain export: one forward of the whole graph over a streaming
window, each form's graph paired with the plain one, with 1 and 2 CPU threads.

Runs the real DAC-16k architecture at RANDOM INIT with the small random-init denoiser of
``bench/stream.py``. Every variant is the full graph (``infer.export.export_full``: wave →
encoder → denoiser → quantizer → decoder → wave, dynamic sample axis, so each is exported once)
with a subset of the layer forms of ``infer.onnx_forms``: none (``plain``: torch's dynamo
exporter on the unmodified graph), each form alone (a form that acts on what another made is
measured with the smallest set it needs), all of them, and torch itself (the ``Enhancer``).

Timing: one ``[1 x window]`` forward, ``window = context + block + lookahead`` of the stream
geometry of each block size (``infer.stream.StreamGeometry``), the input a slice of noisy
speech. Each pair runs the plain graph and the variant on the same slice, in alternating order
(plain first on even pairs), with a pause of ``bench.stream.PARK_S`` before each forward so
that the other engine's spinning worker threads park. Per row: the median of the paired ratios
variant / plain, the share of pairs in which the variant was faster, and both p50s.

Decision rule (``KEEP_RATIO``, ``KEEP_SHARE``): a form is kept only if, in every row measured,
the median paired ratio is at most 0.90 and the variant is faster in at least 80 % of pairs.

Usage: ``python bench/onnx_forms.py [--pairs 20] [--frames 5 50] [--threads 1 2]
[--variants plain conv2d ...] [--workdir DIR] [--smoke] [--no-append]``; prints a Markdown table
and appends it to BENCHMARKS.md. ``--workdir`` keeps the exported graphs there and reuses them
on the next run (an export of DAC-16k takes minutes).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import append_benchmarks, git_commit  # noqa: E402
from bench.denoise import load_average, noisy_speech  # noqa: E402
from bench.stream import DENOISER, PARK_S, small_denoiser  # noqa: E402
from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig, load_codec  # noqa: E402
from cleancodec.infer.denoise import Enhancer, snr_db  # noqa: E402
from cleancodec.infer.export import export_full, read_metadata  # noqa: E402
from cleancodec.infer.onnx_engine import OnnxEnhancer  # noqa: E402
from cleancodec.infer.onnx_forms import (  # noqa: E402
    FORM_CONV2D,
    FORM_POLYPHASE,
    FORM_ROWS,
    FORM_SNAKE_FOLD,
    FORM_SNAKE_PIECES,
    FORM_SNAKE_PRODUCT,
    FORMS,
)
from cleancodec.infer.receptive import codec_chain_field  # noqa: E402
from cleancodec.infer.stream import StreamGeometry  # noqa: E402

PLAIN, TORCH, ALL = "plain", "torch", "all"
# variant name → forms applied; the plain export is the reference of every pair
VARIANTS: dict[str, frozenset[str]] = {
    PLAIN: frozenset(),
    FORM_CONV2D: frozenset({FORM_CONV2D}),
    FORM_POLYPHASE: frozenset({FORM_POLYPHASE}),
    FORM_SNAKE_PRODUCT: frozenset({FORM_SNAKE_PRODUCT}),
    # the folded Snakes leave the unfolded ones (no convolution after them) to SnakeProduct
    FORM_SNAKE_FOLD: frozenset({FORM_SNAKE_PRODUCT, FORM_SNAKE_FOLD}),
    FORM_ROWS: frozenset({FORM_ROWS}),
    FORM_SNAKE_PIECES: frozenset({FORM_ROWS, FORM_SNAKE_PRODUCT, FORM_SNAKE_FOLD,
                                  FORM_SNAKE_PIECES}),
    ALL: FORMS,
}
TIMED_FRAMES = (5, 50)  # block sizes (20 ms frames): 100 ms and 1 s
THREADS = (1, 2)
DEFAULT_PAIRS = 20
WARMUP_PAIRS = 1  # pairs run and discarded per row (first forward of a window size)
KEEP_RATIO = 0.90  # a form is kept only with median paired ratio ≤ this …
KEEP_SHARE = 0.80  # … and the variant faster in at least this share of pairs, in every row
SPEECH_SECONDS = 10.0
SPEECH_SEED = 4
SMOKE = {"arch": "tiny", "frames": (2,), "threads": (1,), "pairs": 2,
         "variants": (PLAIN, FORM_SNAKE_PRODUCT, TORCH)}
MS_PER_S = 1000.0


@dataclass
class Row:
    """Paired timings of one variant against the plain graph at one thread count and block."""

    variant: str
    threads: int
    geometry: StreamGeometry
    variant_s: list[float] = field(default_factory=list)
    plain_s: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> np.ndarray:
        return np.asarray(self.variant_s) / np.asarray(self.plain_s)

    @property
    def median_ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def faster_share(self) -> float:
        return float(np.mean(self.ratios < 1.0))

    @property
    def gain(self) -> bool:
        """The decision rule's test for this row."""
        return self.median_ratio <= KEEP_RATIO and self.faster_share >= KEEP_SHARE


def _timed(engine, x: np.ndarray) -> tuple[float, np.ndarray]:
    time.sleep(PARK_S)
    start = time.perf_counter()
    y = engine(x)
    return time.perf_counter() - start, y


def time_pairs(plain, variant, x: np.ndarray, pairs: int) -> tuple[list[float], list[float]]:
    """``pairs`` paired forwards of ``x: [1 x T]`` (after :data:`WARMUP_PAIRS`), plain first
    on even pairs; (variant seconds, plain seconds)."""
    var_s, plain_s = [], []
    for i in range(WARMUP_PAIRS + pairs):
        if i % 2 == 0:
            tp, _ = _timed(plain, x)
            tv, _ = _timed(variant, x)
        else:
            tv, _ = _timed(variant, x)
            tp, _ = _timed(plain, x)
        if i >= WARMUP_PAIRS:
            var_s.append(tv)
            plain_s.append(tp)
    return var_s, plain_s


def export_variants(codec, model, arch: str, names: list[str],
                    workdir: Path) -> dict[str, dict]:
    """Export each ONNX variant into ``workdir`` (reusing a graph already there whose forms
    match); per variant its path, export seconds (None: reused) and agreement with torch."""
    out = {}
    for name in names:
        if name == TORCH:
            continue
        path = workdir / f"{arch}_{name}.onnx"
        forms = VARIANTS[name]
        if path.is_file() and json.loads(read_metadata(OnnxEnhancer(path).session)
                                         .get("forms", "null") or "null") == sorted(forms):
            out[name] = {"path": path, "seconds": None, "snr_db": None, "size": path.stat().st_size}
            print(f"  {name}: reusing {path}", file=sys.stderr, flush=True)
            continue
        report = export_full(codec, model, path, forms=forms)
        out[name] = {"path": path, "seconds": report.seconds, "snr_db": report.snr_db,
                     "size": report.size_bytes}
        print(f"  {name}: exported in {report.seconds:.0f} s, {report.snr_db:.0f} dB vs torch",
              file=sys.stderr, flush=True)
    return out


def run(arch: str, names: list[str], frames: tuple[int, ...], threads: tuple[int, ...],
        pairs: int, workdir: Path) -> tuple[list[Row], dict]:
    codec = load_codec(CodecConfig(weights="random", random_arch=arch, random_seed=0,
                                   device="cpu", num_threads=max(threads)))
    speech = noisy_speech(SPEECH_SECONDS, SPEECH_SEED)
    model = small_denoiser(codec.latent_dim, codec.encode(speech[: 5 * codec.sample_rate]))
    chain = codec_chain_field(codec, model)
    exports = export_variants(codec, model, arch, [PLAIN, *names], workdir)
    torch_engine = Enhancer(codec, model)
    rows: list[Row] = []
    info = {"field": chain, "exports": exports, "agreement": {}}
    geometries = [StreamGeometry.for_field(chain, f) for f in frames]
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        plain = OnnxEnhancer(exports[PLAIN]["path"], threads=n_threads)
        for name in names:
            if name == PLAIN:
                continue
            engine = torch_engine if name == TORCH else \
                OnnxEnhancer(exports[name]["path"], threads=n_threads)
            for g in geometries:
                if g.window > len(speech):
                    raise SystemExit(f"bench/onnx_forms.py: a {g.ms(g.window):.0f} ms window "
                                     f"exceeds the {SPEECH_SECONDS:g} s of speech")
                x = speech[None, : g.window]
                info["agreement"][name] = min(info["agreement"].get(name, float("inf")),
                                              snr_db(plain(x), engine(x)))
                var_s, plain_s = time_pairs(plain, engine, x, pairs)
                rows.append(Row(name, n_threads, g, var_s, plain_s))
                r = rows[-1]
                print(f"  {name}, {n_threads} thread(s), block {g.block_ms:.0f} ms: ratio "
                      f"{r.median_ratio:.3f}, faster in {r.faster_share:.0%}, p50 "
                      f"{np.median(var_s) * MS_PER_S:.0f} vs {np.median(plain_s) * MS_PER_S:.0f}"
                      " ms", file=sys.stderr, flush=True)
            del engine
    return rows, info


def decisions(rows: list[Row]) -> dict[str, bool]:
    """Variant → whether it meets the rule in every row measured."""
    out: dict[str, bool] = {}
    for r in rows:
        out[r.variant] = out.get(r.variant, True) and r.gain
    return out


def report(arch: str, rows: list[Row], info: dict, pairs: int, wall: float,
           load: tuple[str, str]) -> str:
    chain = info["field"]
    lines = [
        f"## ONNX layer forms against the plain export (`bench/onnx_forms.py`), "
        f"{dt.date.today()}, commit {git_commit()}",
        "",
        f"**{RANDOM_INIT_BANNER}** Compute times are those of the real "
        f"{'DAC-16k' if arch == 'dac16k' else arch} architecture; the denoiser is "
        f"`bench/stream.py`'s small random-init one (width {DENOISER['width']}, depth "
        f"{DENOISER['depth']}, grn {DENOISER['grn']}).",
        "",
        f"Machine: CPU, 2 cores shared with other jobs, {platform.machine()}, torch "
        f"{torch.__version__}, onnxruntime {_ort_version()}. Receptive field: "
        f"{chain.describe()}. Whole run {wall / 60:.1f} min; load average {load[0]} at the "
        f"start, {load[1]} at the end.",
        "",
        f"One forward of the full graph over a stream window (context + block + lookahead), "
        f"{pairs} pairs per row after {WARMUP_PAIRS} warm-up; each pair runs the plain export "
        f"and the variant on the same window in alternating order, a {PARK_S:g} s pause before "
        "each. ratio = variant / plain (below 1: the variant is faster).",
        "",
        "| variant | forms | threads | block ms | window ms | median ratio | variant faster "
        "| p50 ms variant | p50 ms plain | gain ≥ 10 % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        g = r.geometry
        forms = "(torch engine)" if r.variant == TORCH else \
            ", ".join(sorted(VARIANTS[r.variant]))
        lines.append(
            f"| {r.variant} | {forms} | {r.threads} | {g.block_ms:.0f} | {g.ms(g.window):.0f} | "
            f"{r.median_ratio:.3f} | {r.faster_share:.0%} | "
            f"{np.median(r.variant_s) * MS_PER_S:.0f} | {np.median(r.plain_s) * MS_PER_S:.0f} | "
            f"{'yes' if r.gain else 'no'} |")
    lines.append("")
    for name, keep in decisions(rows).items():
        lines.append(f"- {name}: {'meets' if keep else 'does not meet'} the rule (median ratio "
                     f"≤ {KEEP_RATIO:.2f} and faster in ≥ {KEEP_SHARE:.0%} of pairs) in every "
                     "row")
    exported = [f"{k} {v['size'] / 2**20:.0f} MiB"
                + (f", {v['seconds']:.0f} s, {v['snr_db']:.0f} dB vs torch"
                   if v["seconds"] is not None else "")
                for k, v in info["exports"].items()]
    agree = ", ".join(f"{k} {v:.0f} dB" for k, v in info["agreement"].items())
    lines += [f"- exports (size, export + check time, agreement with torch): "
              f"{'; '.join(exported)}",
              f"- outputs over the timed windows against the plain graph's (SNR): {agree}", ""]
    return "\n".join(lines)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help="timed pairs per row")
    parser.add_argument("--frames", type=int, nargs="+", default=list(TIMED_FRAMES),
                        help="block sizes in 20 ms frames")
    parser.add_argument("--threads", type=int, nargs="+", default=list(THREADS))
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, TORCH],
                        default=[k for k in VARIANTS if k != PLAIN] + [TORCH])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the exported graphs here and reuse them")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny codec, one block size, two variants, two pairs; never "
                             "appended")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args()
    arch, frames, threads, pairs, names = ("dac16k", tuple(args.frames), tuple(args.threads),
                                           args.pairs, list(args.variants))
    if args.smoke:
        arch, frames, threads = SMOKE["arch"], SMOKE["frames"], SMOKE["threads"]
        pairs, names = min(pairs, SMOKE["pairs"]), list(SMOKE["variants"])
    start, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows, info = run(arch, names, frames, threads, pairs, workdir)
    text = report(arch, rows, info, pairs, time.perf_counter() - start,
                  (load_start, load_average()))
    print(text)
    if not (args.no_append or args.smoke):
        append_benchmarks(text)


if __name__ == "__main__":
    main()
