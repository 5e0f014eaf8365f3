"""Benchmark of ``make demo-data``: a cold build and a rerun of the shipped corpus, side by side.

Builds ``conf/demo_data.yaml`` into a temporary folder (packages come from the .deb cache,
default ``data/demo/.debs``; missing ones are downloaded first and that time is reported
separately), then builds again to time a rerun. Prints a table per part (seconds, minutes of
audio written, times real time) and appends it to BENCHMARKS.md. No codec is involved.

    .venv/bin/python bench/demo_data.py [--conf conf/demo_data.yaml] [--deb-cache DIR] [--no-append]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BENCHMARKS, append_benchmarks, git_commit
from cleancodec.core.config import load_section
from cleancodec.datagen.demo.build import BuildReport, build_demo_data
from cleancodec.datagen.demo.config import DemoDataConfig
from cleancodec.datagen.demo.debs import AptFetcher

REPO = Path(__file__).resolve().parents[1]
SECONDS_PER_MINUTE = 60.0
KIB = 1024


def prefetch(cfg: DemoDataConfig, cache: Path) -> float:
    """Download the packages not in the cache yet; returns the seconds it took."""
    t0 = time.perf_counter()
    fetcher = AptFetcher(cache, cfg.apt_update)
    for pkg in [s.package for s in cfg.enabled_speech] + [
            p.package for p in cfg.enabled_noise_packages]:
        fetcher.fetch(pkg)
    return time.perf_counter() - t0


def part_of(unit: str) -> str:
    return unit.split("/")[0]


def table(cold: BuildReport, warm: BuildReport, download_s: float, size_mb: float) -> str:
    """Markdown table: per part kind, cold seconds, audio minutes, x real time, rerun seconds."""
    minutes: dict[str, float] = {}
    for r in cold.rows:
        unit = ("testset" if r.role.startswith("testset")
                else "speech" if r.role == "clean"
                else "generated" if r.source_package == "generated" else "noise")
        minutes[unit] = minutes.get(unit, 0.0) + r.duration_s / SECONDS_PER_MINUTE
    lines = ["| part | cold build s | audio written min | x real time | rerun s |",
             "|---|---:|---:|---:|---:|"]
    for part in ("speech", "noise", "generated", "testset"):
        cold_s = sum(s for u, s in cold.unit_seconds.items() if part_of(u) == part)
        warm_s = sum(s for u, s in warm.unit_seconds.items() if part_of(u) == part)
        mins = minutes.get(part, 0.0)
        rt = mins * SECONDS_PER_MINUTE / cold_s if cold_s else float("nan")
        lines.append(f"| {part} | {cold_s:.1f} | {mins:.1f} | {rt:.0f} | {warm_s:.2f} |")
    total_min = sum(minutes.values())
    lines.append(f"| **total** | **{cold.seconds:.1f}** | **{total_min:.1f}** | "
                 f"**{total_min * SECONDS_PER_MINUTE / cold.seconds:.0f}** | "
                 f"**{warm.seconds:.2f}** |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB
    notes = [f"rerun / cold = {warm.seconds / cold.seconds:.4f} (a rerun rebuilds nothing)",
             f"corpus on disk: {size_mb:.0f} MB; peak RSS {peak_mb:.0f} MB",
             f"package download before the build: {download_s:.1f} s "
             "(0 when the .deb cache was full)"]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conf", default=str(REPO / "conf/demo_data.yaml"))
    ap.add_argument("--deb-cache", default=str(REPO / "data/demo/.debs"))
    ap.add_argument("--no-append", action="store_true", help="print only")
    args = ap.parse_args(argv)
    cfg = load_section(args.conf, "demo_data", DemoDataConfig)
    cache = Path(args.deb_cache)
    download_s = prefetch(cfg, cache)
    out = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    try:
        cold = build_demo_data(cfg, out, cache)
        warm = build_demo_data(cfg, out, cache)
        if cold.failures or warm.failures:
            raise SystemExit("build failed:\n" + "\n".join(cold.failures + warm.failures))
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    finally:
        shutil.rmtree(out, ignore_errors=True)
    header = (f"## demo corpus build (`bench/demo_data.py`), {dt.date.today().isoformat()}, "
              f"commit {git_commit()}\n\n"
              f"Machine: {os.cpu_count()} CPU cores shared with other jobs (noisy timings), "
              f"{platform.machine()}, Python {platform.python_version()}; no codec involved. "
              f"Profile `{Path(args.conf).name}`, single process.\n")
    text = header + "\n" + table(cold, warm, download_s, size_mb) + "\n"
    print(text)
    if not args.no_append:
        append_benchmarks(text)
        print(f"appended to {BENCHMARKS}")


if __name__ == "__main__":
    main()
