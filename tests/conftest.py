"""Shared, session-scoped fixtures (built once per test session)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def pytest_configure(config):
    """An xdist worker computes with one thread (``make test`` starts one worker per core), and
    so do the processes it starts: more threads than cores only contend."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# --- trainer: small latent caches built by the real pipeline ----------------------------------

TINY_TRAIN_WINDOWS = 128
TINY_VAL_WINDOWS = 32
TINY_WINDOWS_PER_SHARD = 32
TINY_WINDOW_SECONDS = 1.0


@pytest.fixture(scope="session")
def tiny_latent_cache(tmp_path_factory) -> Callable[..., Path]:
    """Factory ``(storage, train_windows, val_windows, noisy_per_clean=1) -> cache dir``: a cache
    built by
    ``pipeline.build.build_cache`` with the tiny random-init DAC (latent dim 64) from the seeded
    synthetic corpus.

    1 s windows, by default 128 train / 32 val windows, in shards of 32. Val speakers are held
    out; noise files are shared between the splits (``split_noise: false``) so that a few
    hundred steps can show a held-out gain. Each variant is built once per session, on first use.
    """
    root = tmp_path_factory.mktemp("tiny_latent_cache")
    built: dict[str, Path] = {}

    def get(storage: str = "zarr", train_windows: int = TINY_TRAIN_WINDOWS,
            val_windows: int = TINY_VAL_WINDOWS, noisy_per_clean: int = 1) -> Path:
        key = f"{storage}-{train_windows}-{val_windows}-{noisy_per_clean}"
        if key not in built:
            from cleancodec.core.codec import CodecConfig
            from cleancodec.pipeline.build import CacheConfig, build_cache
            from cleancodec.pipeline.mix import MixConfig

            cfg = CacheConfig(storage=storage, corpus="synthetic",
                              synthetic_dir=str(root / "corpus"),
                              train_windows=train_windows, val_windows=val_windows,
                              windows_per_shard=TINY_WINDOWS_PER_SHARD, split_noise=False,
                              noisy_per_clean=noisy_per_clean,
                              mix=MixConfig(window_seconds=TINY_WINDOW_SECONDS))
            out = root / key
            build_cache(cfg, CodecConfig(weights="random", random_arch="tiny"), out_dir=out,
                        progress=False)
            built[key] = out
        return built[key]

    return get


# --- infer: the tiny codec's full ONNX graph, exported once -----------------------------------


def _shared_export(tmp_path_factory, name: str, export) -> tuple:
    """``(codec, denoiser, path, report)``: ``bench.stream.bench_models``' smoke models
    exported once per test run by ``export(codec, denoiser, path)``. Under pytest-xdist the
    workers share the file: the first one exports it under a lock (with its report beside it),
    the others wait and read it."""
    import dataclasses
    import json
    import os

    from filelock import FileLock

    from bench.stream import SMOKE, bench_models
    from cleancodec.infer.export import ExportReport

    codec, model, _ = bench_models(SMOKE["arch"])
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    path, saved = root / name, root / f"{name}.report.json"
    with FileLock(str(path) + ".lock"):
        if saved.exists():
            fields = json.loads(saved.read_text())
            report = ExportReport(**{**fields, "path": Path(fields["path"])})
        else:
            report = export(codec, model, path)
            saved.write_text(json.dumps(dataclasses.asdict(report), default=str))
    return codec, model, path, report


# under pytest-xdist, the worker that exports each shared graph before its first test
EARLY_EXPORTS = {"gw0": "tiny_full_graph", "gw1": "tiny_stream_graph"}


@pytest.fixture(scope="session", autouse=True)
def _export_graphs_early(request):
    """Under xdist, the first two workers each export one of the shared graphs at the start, in
    parallel, when the run has tests that need it: no worker then waits for another's export in
    the middle of the run."""
    name = EARLY_EXPORTS.get(os.environ.get("PYTEST_XDIST_WORKER", ""))
    if name and any(name in item.fixturenames for item in request.session.items):
        request.getfixturevalue(name)


@pytest.fixture(scope="session")
def tiny_full_graph(tmp_path_factory):
    """``(codec, denoiser, path, report)``: ``bench/stream.py``'s smoke models (the tiny
    random-init codec and the benchmark's small denoiser, ``bench.stream.bench_models``)
    exported as one full graph by ``infer.export.export_full``, with provenance step 5 and
    checkpoint ``runs/x/best.pt``, once per run (passed to ``bench/stream.py --smoke --onnx``,
    which then skips its own export)."""
    from cleancodec.infer.export import export_full

    return _shared_export(tmp_path_factory, "full.onnx", lambda codec, model, path: export_full(
        codec, model, path, {"step": 5}, "runs/x/best.pt"))


@pytest.fixture(scope="session")
def tiny_stream_graph(tmp_path_factory):
    """``(codec, denoiser, path, report)``: the same models as :func:`tiny_full_graph`
    exported as one streaming step by ``infer.export.export_streaming`` (checked step by step
    against torch over a 10 s stream), once per run."""
    from cleancodec.infer.export import export_streaming

    return _shared_export(tmp_path_factory, "step.onnx", lambda codec, model, path: (
        export_streaming(codec, model, path, {"step": 5}, "runs/x/best.pt")))


# --- pipeline.build: a small synthetic corpus and its reference cache ------------------------


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The seeded synthetic corpus of the build tests (test_build*.py): 4 speakers x 2 clips
    of 3 s, 2 s of each noise (``datagen.synth.make_tiny_corpus``)."""
    from cleancodec.datagen.synth import make_tiny_corpus

    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"), seed=0, speakers=4,
                            clips_per_speaker=2, clip_seconds=3.0, noise_seconds=2.0)


@pytest.fixture(scope="session")
def zarr_cache(corpus, tmp_path_factory):
    """``(cache dir, BuildSummary)``: ``corpus`` built once with
    ``tests.helpers.small_cache_cfg()`` (zarr), the reference other builds are compared with."""
    from tests.helpers import build_small_cache

    out = tmp_path_factory.mktemp("zarr") / "cache"
    return out, build_small_cache(corpus, out)


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """Tests that build caches in this process change torch's thread count: put it back after
    each module."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
