"""Inference benchmark: real-time factor, denoiser overhead, memory vs length, chunk agreement.

Runs the real DAC-16k architecture at RANDOM INIT (no pretrained weights are needed, or
downloadable, on the benchmark machine): speeds and memory are those of the real networks; the
audio is meaningless. Denoisers are ``trainer.models.Denoiser`` at the medium (width 512,
depth 4) and large (width 768, depth 8) presets, random init.

Figures, measured side by side in one run (the machine may be shared and noisy):

- real-time factor (wall seconds per audio second, whole file → file path of
  ``infer.run.denoise_path``) for 10 s and 60 s files: ``--bypass`` (codec alone), medium,
  large, and their ratios to bypass (goal ≤ 1.1 for medium: the denoiser nearly free);
- peak RSS of a separate process denoising a long file vs a 10 s one (goal ≤ 1.5×): the
  DAC-16k codec on a ``--long-seconds`` file (default 60 s, seven chunks; ``--full`` makes it
  the 10-minute file of the goal, about ten more minutes on 2 cores) and the tiny codec (the
  same code path, 40× faster) on a 10-minute file;
- chunked vs whole-file agreement (SNR, dB) on a 60 s file with the shipped chunk geometry, for
  the DAC-16k and the tiny codec, codec alone and with a denoiser whose zero-initialised head
  and GRN gains are randomised (a fresh denoiser is the identity; a trained one is not);
- on a machine with CUDA: RTF with 16 chunks per forward on the GPU.

Usage: ``python bench/denoise.py [--threads 2] [--full]``; prints a Markdown table and appends
it to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import append_benchmarks, git_commit  # noqa: E402
from cleancodec.core.codec import RANDOM_INIT_BANNER, CodecConfig, load_codec  # noqa: E402
from cleancodec.datagen.synth import synth_noise, synth_utterance  # noqa: E402
from cleancodec.infer.denoise import (  # noqa: E402
    DenoiseConfig,
    Enhancer,
    chunk_spec,
    enhance_signal,
    enhance_whole,
    snr_db,
)
from cleancodec.infer.run import denoise_path  # noqa: E402
from cleancodec.trainer.checkpoint import load_denoiser  # noqa: E402
from cleancodec.trainer.models import Denoiser  # noqa: E402

SR = 16000
PRESETS = {"medium": {"width": 512, "depth": 4}, "large": {"width": 768, "depth": 8}}
RTF_SECONDS = (10.0, 60.0)
SHORT_SECONDS = 10.0
TINY_LONG_SECONDS = 600.0
AGREEMENT_SECONDS = 60.0
GOAL_MEDIUM_RATIO = 1.1
GOAL_RSS_RATIO = 1.5
GPU_BATCH = 16
UTTERANCE_SECONDS = 5.0
SNR_DB = 5.0


def codec_config(arch: str, threads: int, device: str = "cpu") -> CodecConfig:
    return CodecConfig(weights="random", random_arch=arch, random_seed=0, device=device,
                       num_threads=threads)


def noisy_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Synthetic utterances + noise at ``SNR_DB``, float32 ``[T]`` at 16 kHz."""
    n = int(seconds * SR)
    pieces, i = [], 0
    while sum(len(p) for p in pieces) < n:
        clean = synth_utterance(seed, i % 4, i, UTTERANCE_SECONDS)
        noise = synth_noise(("pink", "white", "hum")[i % 3], seed, i, UTTERANCE_SECONDS)
        gain = np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (SNR_DB / 10))
        pieces.append(clean + gain * noise)
        i += 1
    return np.clip(np.concatenate(pieces)[:n], -1, 1).astype(np.float32)


def denoiser(latent_dim: int, preset: str, trained_like: bool = False, seed: int = 0,
             stats_from: torch.Tensor | None = None) -> Denoiser:
    """A random-init denoiser; ``trained_like`` randomises its zero-init head and GRN gains."""
    torch.manual_seed(seed)
    model = Denoiser(latent_dim, **PRESETS[preset])
    if trained_like:
        with torch.no_grad():
            if stats_from is not None:
                model.set_latent_stats(stats_from.mean((0, 2)), stats_from.std((0, 2)))
            torch.nn.init.normal_(model.head.weight, std=0.02)
            for block in model.blocks:
                block.grn.gamma.normal_(0.0, 0.5)
                block.grn.beta.normal_(0.0, 0.1)
    return model.eval()


# --- real-time factor -------------------------------------------------------------------------


def time_file(enhancer: Enhancer, wav: Path, out: Path, cfg: DenoiseConfig) -> float:
    if enhancer.codec.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    summary = denoise_path(wav, out, enhancer, cfg, progress=False)
    if enhancer.codec.device.type == "cuda":
        torch.cuda.synchronize()
    assert not summary.failed, summary.lines()
    return time.perf_counter() - start


def rtf_rows(tmp: Path, threads: int, device: str, batch: int,
             reps: dict[float, int]) -> list[dict]:
    """Interleaved runs (the order rotates each repetition); the fastest run of each counts,
    the least disturbed by other jobs on a shared machine."""
    codec = load_codec(codec_config("dac16k", threads, device))
    models = {"bypass": None, **{p: denoiser(codec.latent_dim, p) for p in PRESETS}}
    enhancers = {k: Enhancer(codec, m) for k, m in models.items()}
    cfg = DenoiseConfig(batch_size=batch)
    warm = tmp / "warm.wav"
    sf.write(warm, noisy_speech(2.0, 9), SR)
    for enh in enhancers.values():
        time_file(enh, warm, tmp / "warm_out.wav", cfg)
    rows = []
    for seconds in RTF_SECONDS:
        wav = tmp / f"rtf_{seconds:g}.wav"
        sf.write(wav, noisy_speech(seconds, 1), SR)
        names = list(enhancers)
        wall: dict[str, list[float]] = {k: [] for k in names}
        for rep in range(reps[seconds]):
            for k in names[rep % len(names):] + names[:rep % len(names)]:
                wall[k].append(time_file(enhancers[k], wav, tmp / f"out_{k}.wav", cfg))
        best = {k: min(v) for k, v in wall.items()}
        for k in names:
            rows.append({"device": codec.device.type, "batch": batch, "seconds": seconds,
                         "model": k, "rtf": best[k] / seconds, "runs": len(wall[k]),
                         "spread": max(wall[k]) / best[k], "ratio": best[k] / best["bypass"]})
    return rows


# --- peak RSS in separate processes -----------------------------------------------------------


def rss_child(arch: str, wav: str, threads: int) -> None:
    """Child process: denoise ``wav`` with the medium denoiser; print peak RSS (MiB) as JSON."""
    codec = load_codec(codec_config(arch, threads))
    enh = Enhancer(codec, denoiser(codec.latent_dim, "medium"))
    with tempfile.TemporaryDirectory() as tmp:
        denoise_path(wav, Path(tmp) / "out.wav", enh, DenoiseConfig(), progress=False)
    print(json.dumps({"peak_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). ``ru_maxrss`` would not do: Linux carries the
    parent's high-water mark over ``fork`` + ``exec``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_rss(arch: str, wav: Path, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-child", arch, str(wav),
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def rss_rows(tmp: Path, threads: int, long_seconds: float, reps: int) -> list[dict]:
    """Peak RSS of ``reps`` processes per file (malloc arenas make single figures vary)."""
    rows = []
    for arch, long in (("dac16k", long_seconds), ("tiny", TINY_LONG_SECONDS)):
        short_wav, long_wav = tmp / f"{arch}_short.wav", tmp / f"{arch}_long.wav"
        sf.write(short_wav, noisy_speech(SHORT_SECONDS, 2), SR)
        with sf.SoundFile(long_wav, "w", SR, 1) as fh:  # written in pieces: bench memory stays low
            for k in range(int(long // 60)):
                fh.write(noisy_speech(60.0, 100 + k))
        short, longer = [], []
        for _ in range(reps):
            short.append(peak_rss(arch, short_wav, threads))
            longer.append(peak_rss(arch, long_wav, threads))
        rows.append({"arch": arch, "short_s": SHORT_SECONDS, "long_s": long, "short_mib": short,
                     "long_mib": longer, "ratio": max(longer) / min(short)})
    return rows


# --- chunked vs whole -------------------------------------------------------------------------


class PairedEnhancer(Enhancer):
    """Rows come in pairs of the same wave: row 2k gets the codec alone, row 2k+1 codec +
    denoiser, from one encoder pass (the benchmark's two agreement figures at the cost of one
    encode)."""

    @torch.inference_mode()
    def __call__(self, waves: np.ndarray) -> np.ndarray:
        length = waves.shape[-1]
        z = self.codec.encode(waves[::2])
        zq = torch.stack([self.codec.quantize(z), self.codec.quantize(self.denoiser(z))], 1)
        y = self.codec.decode(zq.flatten(0, 1), length=length)
        return y[:, 0].cpu().numpy()


def agreement_rows(threads: int, checkpoint: str | None = None) -> list[dict]:
    """Chunked vs whole SNR; ``checkpoint`` (trained on DAC-16k random-init latents, e.g. the
    random-codec demo's) adds a row with its trained denoiser."""
    x = noisy_speech(AGREEMENT_SECONDS, 3)
    rows = []
    for arch in ("dac16k", "tiny"):
        codec = load_codec(codec_config(arch, threads))
        stats = codec.encode(x[: 10 * SR])
        model = denoiser(codec.latent_dim, "medium", True, stats_from=stats)
        enh = PairedEnhancer(codec, model)
        spec = chunk_spec(DenoiseConfig(), enh)
        pair = np.stack([x, x])
        whole = enhance_whole(enh, pair)
        chunked = enhance_signal(enh, pair, spec, batch_size=2)
        labels = ("codec alone", "medium, grn: global, randomised head and gains")
        for i, label in enumerate(labels):
            rows.append({"arch": arch, "model": label, "snr": snr_db(whole[i], chunked[i])})
        if checkpoint and arch == "dac16k":
            trained, info = load_denoiser(checkpoint)
            enh = Enhancer(codec, trained)
            snr = snr_db(enhance_whole(enh, x),
                         enhance_signal(enh, x, chunk_spec(DenoiseConfig(), enh)))
            rows.append({"arch": arch, "model": f"trained checkpoint ({info.get('step')} steps, "
                                                 f"{Path(checkpoint).parent.name})", "snr": snr})
    return rows


# --- report -----------------------------------------------------------------------------------


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def report(rtf: list[dict], rss: list[dict], agree: list[dict], threads: int,
           wall: float, load: tuple[str, str]) -> str:
    cfg = DenoiseConfig()
    lines = [
        f"## denoise (`bench/denoise.py`), {dt.date.today()}, commit {git_commit()}",
        "",
        f"**{RANDOM_INIT_BANNER}** Speeds and memory are those of the real DAC-16k "
        "architecture; denoisers are random-init medium / large presets.",
        "",
        f"Machine: 2 CPU cores shared with other jobs (noisy timings), {platform.machine()}, "
        f"torch {torch.__version__}, {threads} torch threads; chunks of {cfg.chunk_frames} "
        f"frames, context from the receptive field, {cfg.crossfade_frames} crossfade; 16 kHz "
        "mono "
        f"WAV files through `infer.run.denoise_path` (read, chunk, encode, denoise, quantise, "
        f"decode, write). Whole run {wall / 60:.1f} min; load average {load[0]} at the start, "
        f"{load[1]} at the end (above 2 means other jobs competed for the 2 cores).",
        "",
        "| device | chunks / forward | file s | model | runs | RTF (wall s / audio s, best) "
        "| slowest / best | vs bypass |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rtf:
        lines.append(f"| {r['device']} | {r['batch']} | {r['seconds']:g} | {r['model']} | "
                     f"{r['runs']} | {r['rtf']:.3f} | {r['spread']:.2f} | {r['ratio']:.3f} |")
    medium = [r["ratio"] for r in rtf if r["model"] == "medium" and r["device"] == "cpu"]
    lines += ["", f"- medium / bypass: worst {max(medium):.3f} (goal ≤ {GOAL_MEDIUM_RATIO}: "
                  f"{'met' if max(medium) <= GOAL_MEDIUM_RATIO else 'NOT met'})"]
    if not any(r["device"] == "cuda" for r in rtf):
        lines.append(f"- GPU (batch {GPU_BATCH}): not measured, no GPU on this machine")
    lines += ["", "| codec | short file s | long file s | peak RSS short MiB (runs) | "
                  "peak RSS long MiB (runs) | highest long / lowest short |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in rss:
        short = ", ".join(f"{v:.0f}" for v in r["short_mib"])
        longer = ", ".join(f"{v:.0f}" for v in r["long_mib"])
        lines.append(f"| {r['arch']} | {r['short_s']:g} | {r['long_s']:g} | {short} | {longer} "
                     f"| {r['ratio']:.3f} |")
    worst = max(r["ratio"] for r in rss)
    lines += ["", f"- peak RSS long / short: worst {worst:.3f} (goal ≤ {GOAL_RSS_RATIO}: "
                  f"{'met' if worst <= GOAL_RSS_RATIO else 'NOT met'}); each figure is the VmHWM "
                  f"of its own process (torch and the model weights included), medium denoiser"]
    return "\n".join(lines + agreement_lines(agree))


def agreement_lines(agree: list[dict]) -> list[str]:
    lines = ["", f"| codec | model | chunked vs whole SNR on {AGREEMENT_SECONDS:g} s, dB |",
             "|---|---|---:|"]
    for r in agree:
        lines.append(f"| {r['arch']} | {r['model']} | {r['snr']:.1f} |")
    return lines + ["", "- the codec alone agrees to float rounding: the context exceeds the "
                        "encoder (±9 frames) and decoder (±10 frames) receptive fields; a "
                        "denoiser with local statistics only (`grn: none` / `window`) keeps "
                        "that; one with `grn: global` normalises by statistics of the whole "
                        "sequence (a chunk sees its own)", ""]


def agreement_report(agree: list[dict], wall: float) -> str:
    return "\n".join([
        f"## denoise, chunked vs whole (`bench/denoise.py --agreement-only`), {dt.date.today()}, "
        f"commit {git_commit()}", "",
        f"**{RANDOM_INIT_BANNER}** Chunks of {DenoiseConfig().chunk_frames} frames with "
        "the context derived from the receptive field of codec + denoiser; "
        f"{wall / 60:.1f} min.",
        *agreement_lines(agree)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true",
                        help="DAC-16k peak RSS on a 10-minute file (about 10 more minutes)")
    parser.add_argument("--long-seconds", type=float, default=60.0,
                        help="DAC-16k long file for peak RSS (without --full)")
    parser.add_argument("--reps-short", type=int, default=2, help="runs per model, 10 s file")
    parser.add_argument("--rss-reps", type=int, default=2, help="processes per file for RSS")
    parser.add_argument("--reps-long", type=int, default=1, help="runs per model, 60 s file")
    parser.add_argument("--checkpoint", default=None,
                        help="also measure chunk agreement with this trained checkpoint "
                             "(DAC-16k random-init latents, e.g. runs/demo_random/train/best.pt)")
    parser.add_argument("--agreement-only", action="store_true",
                        help="only the chunked vs whole table (a few minutes)")
    parser.add_argument("--no-append", action="store_true", help="print only")
    parser.add_argument("--rss-child", nargs=2, metavar=("ARCH", "WAV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1], args.threads)
        return
    start, load_start = time.perf_counter(), load_average()
    if args.agreement_only:
        agree = agreement_rows(args.threads, args.checkpoint)
        text = agreement_report(agree, time.perf_counter() - start)
        print(text)
        if not args.no_append:
            append_benchmarks(text)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reps = {RTF_SECONDS[0]: args.reps_short, RTF_SECONDS[1]: args.reps_long}
        rtf = rtf_rows(tmp, args.threads, "cpu", 1, reps)
        if torch.cuda.is_available():
            rtf += rtf_rows(tmp, args.threads, "cuda", GPU_BATCH, reps)
        rss = rss_rows(tmp, args.threads, TINY_LONG_SECONDS if args.full else args.long_seconds,
                       args.rss_reps)
    agree = agreement_rows(args.threads, args.checkpoint)
    text = report(rtf, rss, agree, args.threads, time.perf_counter() - start,
                  (load_start, load_average()))
    print(text)
    if not args.no_append:
        append_benchmarks(text)


if __name__ == "__main__":
    main()
