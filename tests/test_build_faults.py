"""pipeline.build under interruption and in parallel: kill -9 at a random moment, a stop
signal, two torchrun ranks, worker processes, and a second build into a held cache
folder (subprocesses; the shared corpus and reference cache: tests/conftest.py)."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cleancodec.core.config import to_dict
from cleancodec.pipeline.build import CacheConfig, build_cache
from cleancodec.pipeline.manifest import load_manifest
from tests.helpers import BUILD_CODEC as CODEC
from tests.helpers import REPO, split_arrays
from tests.helpers import build_small_cache as build
from tests.helpers import small_cache_cfg as small_cfg

# --- interruption and parallel builds (subprocesses) -----------------------------------------

_BUILD_SCRIPT = """
import json, sys
from cleancodec.pipeline.build import CacheConfig, build_cache
from cleancodec.core.codec import CodecConfig
from cleancodec.core.config import from_dict
a = json.loads(sys.argv[1])
build_cache(from_dict(CacheConfig, a["cfg"]), CodecConfig(**a["codec"]), a["clean"], a["noise"],
            None, a["out"], workers=a.get("workers", 1), progress=False)
"""


def _build_args(corpus, cfg: CacheConfig, out: Path, **extra) -> list[str]:
    args = {"cfg": to_dict(cfg), "codec": to_dict(CODEC), "clean": str(corpus.clean_dir),
            "noise": str(corpus.noise_dir), "out": str(out), **extra}
    return [sys.executable, "-c", _BUILD_SCRIPT, json.dumps(args)]


def _done_shards(out: Path) -> int:
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(s["status"] == "done" for sp in m["splits"].values() for s in sp["shards"])


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_rerun_equals_uninterrupted(corpus, tmp_path):
    cfg = small_cfg(train_windows=80, val_windows=4, windows_per_shard=2)
    reference = tmp_path / "reference"
    build_cache(cfg, CODEC, corpus.clean_dir, corpus.noise_dir, out_dir=reference,
                progress=False)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_build_args(corpus, cfg, out), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _done_shards(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        delay = random.uniform(0.0, 0.2)
        print(f"SIGKILL {delay:.3f} s after the first finished shard")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    killed_at = _done_shards(out)
    assert 1 <= killed_at < 42 and not load_manifest(out)["complete"]
    summary = build_cache(cfg, CODEC, corpus.clean_dir, corpus.noise_dir, out_dir=out,
                          progress=False)
    assert summary.complete and summary.shards_built == 42 - killed_at
    assert not list(out.glob(".*.partial")) and not list((out / ".tmp").glob("*"))
    for split in ("train", "val"):
        ref, got = split_arrays(reference, split), split_arrays(out, split)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
        assert got[2] == ref[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_world_two_splits_shards_and_rank_zero_finalises(zarr_cache, corpus, tmp_path):
    reference, _ = zarr_cache
    out = tmp_path / "ranks"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(_build_args(corpus, small_cfg(), out), cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    m = load_manifest(out, require_complete=True)
    order = [(split, s) for split in ("train", "val") for s in m["splits"][split]["shards"]]
    assert [s["rank"] for _, s in order] == [pos % 2 for pos in range(len(order))]
    assert not list((out / ".markers").glob("*.json"))
    for split in ("train", "val"):
        np.testing.assert_array_equal(split_arrays(out, split)[1],
                                      split_arrays(reference, split)[1])


@pytest.mark.slow
def test_worker_processes_build_the_same_cache(zarr_cache, corpus, tmp_path):
    reference, _ = zarr_cache
    out = tmp_path / "workers"
    summary = build_cache(small_cfg(), CODEC, corpus.clean_dir, corpus.noise_dir, out_dir=out,
                          workers=2, progress=False)
    assert summary.complete and summary.shards_built == 4
    for split in ("train", "val"):
        np.testing.assert_array_equal(split_arrays(out, split)[0],
                                      split_arrays(reference, split)[0])


_CLI_BUILD_SCRIPT = """
import sys
from cleancodec.cli import main
sys.argv = ["cleancodec", *sys.argv[1:]]
main()
"""


# SIGTERM here, SIGINT in test_trainer's stop test: both stages stop through the same
# core.stopping.GracefulStop, so each signal is run through one stage end to end
@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143)])
def test_a_stop_signal_finishes_the_shard_in_flight_and_the_rerun_completes(corpus, tmp_path,
                                                                            sig, code):
    cfg = small_cfg(train_windows=80, val_windows=4, windows_per_shard=2)
    reference = tmp_path / "reference"
    build_cache(cfg, CODEC, corpus.clean_dir, corpus.noise_dir, out_dir=reference,
                progress=False)
    out = tmp_path / "stopped"
    proc = subprocess.Popen(_build_args(corpus, cfg, out), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while _done_shards(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "StopRequested" in err, err[-2000:]  # raised to the script
    stopped_at = _done_shards(out)
    assert 1 <= stopped_at < 42 and not list((out / ".tmp").glob("*"))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") and p.name != ".tmp"]
    summary = build_cache(cfg, CODEC, corpus.clean_dir, corpus.noise_dir, out_dir=out,
                          progress=False)
    assert summary.complete and summary.shards_built == 42 - stopped_at
    for split in ("train", "val"):
        ref, got = split_arrays(reference, split), split_arrays(out, split)
        np.testing.assert_array_equal(got[1], ref[1])
    # through the command line, the conventional exit code
    again = tmp_path / "cli"
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "codec: {weights: random, random_arch: tiny}\n"
        "cache: {train_windows: 80, val_windows: 4, windows_per_shard: 2, seed: 0}\n")
    proc = subprocess.Popen([sys.executable, "-c", _CLI_BUILD_SCRIPT, "cache", "--conf",
                             str(profile), "--clean", str(corpus.clean_dir), "--noise",
                             str(corpus.noise_dir), "--out", str(again), "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while _done_shards(again) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and "rerun the same command" in err, err[-2000:]


def test_a_second_build_into_a_held_cache_folder_is_refused(corpus, tmp_path):
    import os
    import socket

    from cleancodec.core.dirlock import DirectoryLock, DirectoryLockedError

    out = tmp_path / "cache"
    with DirectoryLock(out, "cache"):
        with pytest.raises(DirectoryLockedError, match=f"pid {os.getpid()}") as err:
            build(corpus, out)
        assert socket.gethostname() in str(err.value)
    summary = build(corpus, out)  # released: the build runs, and the lock file is no stranger
    assert summary.complete and (out / ".cleancodec.lock").exists()
