"""Helpers of ``make demo``: the codec check that runs first, and the test-set excerpt.

``python -m cleancodec.infer.demo preflight --conf conf/demo.yaml [--codec random|PATH]`` makes sure the DAC
weights can be had before minutes of work start (dac's cache, else dac's download); offline it
stops with what to do, including ``make demo CODEC=random``. With the random-init codec it
prints, as the demo's first line, that audio quality is meaningless.

``python -m cleancodec.infer.demo testset --conf conf/demo.yaml --corpus data/demo --out DIR`` copies the
first ``demo.testset_clips`` clean/noisy pairs of the demo corpus's DNS-style test set (by
``fileid``) into ``DIR/clean`` and ``DIR/noisy``, so the demo's denoise and evaluate steps fit
the time budget on a CPU.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from cleancodec.pipeline.atomic import publish, temp_beside
from cleancodec.pipeline.codec import (
    RANDOM,
    RANDOM_INIT_BANNER,
    CodecConfig,
    CodecWeightsError,
    default_weights_path,
    fetch_default_weights,
    weights_url,
)
from cleancodec.pipeline.config import load_section

from .testset import fileid, list_audio

EXIT_NO_WEIGHTS = 2
TESTSET_DIR = "testset"


@dataclass
class DemoConfig:
    """The ``demo`` section of a profile.

    testset_clips: test-set clips denoised and scored (0 = all of them).
    """

    testset_clips: int = 12


def offline_message(reason: str) -> str:
    """What to do when the demo cannot get DAC weights."""
    return (
        "make demo needs the pretrained DAC 16 kHz weights, and they are not available:\n"
        f"  {reason}\n\n"
        "Supply them in one of these ways, then run `make demo` again:\n"
        f"  - download {weights_url()}\n"
        f"    on a machine with internet and save it as {default_weights_path()}\n"
        "    (dac downloads it there by itself when this machine is online), or\n"
        "  - make demo CODEC=/path/to/weights_16khz.pth   (any .pth in DAC's release format)\n\n"
        "Or run `make demo CODEC=random`: the same chain (demo corpus, cache, training,\n"
        "denoising, evaluation) with a seeded random-init codec. It checks that the pipeline\n"
        "works end to end; its audio and scores are meaningless, and every output says so."
    )


def preflight(codec_cfg: CodecConfig) -> str:
    """Return the first line the demo prints; raise CodecWeightsError when weights are missing."""
    if codec_cfg.weights == RANDOM:
        return RANDOM_INIT_BANNER
    if codec_cfg.weights:
        path = Path(codec_cfg.weights).expanduser()
        if not path.is_file():
            raise CodecWeightsError(f"{path}: no such weights file (CODEC= / codec.weights)")
        return f"demo with DAC weights {path}"
    return f"demo with DAC weights {fetch_default_weights()}"


def copy_testset(corpus: str | Path, out: str | Path, clips: int) -> list[str]:
    """Copy the first ``clips`` (0 = all) clean/noisy pairs by fileid; returns the noisy names.

    Files already present with the same size are kept; each copy is atomic.
    """
    src = Path(corpus) / TESTSET_DIR
    clean = {fileid(rel): p for rel, p in list_audio(src / "clean").items()}
    noisy = {fileid(rel): p for rel, p in list_audio(src / "noisy").items()}
    ids = sorted(i for i in set(clean) & set(noisy) if i is not None)
    if not ids:
        raise FileNotFoundError(f"{src}: no clean/noisy pairs (build it with `make demo-data`)")
    chosen = ids[:clips] if clips else ids
    names = []
    for i in chosen:
        for kind, path in (("clean", clean[i]), ("noisy", noisy[i])):
            target = Path(out) / kind / path.name
            if target.is_file() and target.stat().st_size == path.stat().st_size:
                continue
            tmp = temp_beside(target)
            shutil.copyfile(path, tmp)
            publish(tmp, target)
        names.append(noisy[i].name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cleancodec.infer.demo",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("preflight", help="check that the codec weights can be had")
    pre.add_argument("--conf", default=None)
    pre.add_argument("--codec", default=None, help="random | weights path")
    tst = sub.add_parser("testset", help="copy the demo test-set excerpt")
    tst.add_argument("--conf", default=None)
    tst.add_argument("--corpus", default="data/demo")
    tst.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "preflight":
        codec_cfg = load_section(args.conf, "codec", CodecConfig)
        if args.codec:
            codec_cfg = replace(codec_cfg, weights=args.codec)
        try:
            print(preflight(codec_cfg), flush=True)
        except CodecWeightsError as exc:
            reason = str(exc).splitlines()[0]
            print(offline_message(reason.split(" (")[0] if "could not be downloaded" in reason
                                  else reason), file=sys.stderr)
            return EXIT_NO_WEIGHTS
        return 0
    cfg = load_section(args.conf, "demo", DemoConfig)
    names = copy_testset(args.corpus, args.out, cfg.testset_clips)
    print(f"demo test set: {len(names)} clean/noisy pairs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
