"""Build the embedded demo corpus (``cleancodec demo-data``): real speech and noise from Debian
packages plus seeded generated noise, speaker-disjoint splits, and a DNS-style test set.

Layout under the output folder (default ``data/demo``)::

    clean/<speaker>/<speaker>_<language>_NNN.wav     16 kHz mono speech sessions (~30 s)
    noise/<kind>/*.wav                               16 kHz mono noise
    testset/clean/clean_fileid_N.wav                 10 s targets
    testset/noisy/clnspN_<kind>_<noise>_snrS_tlL_fileid_N.wav
    index.csv      one row per file: path, role, split, kind, speaker, language, duration_s,
                   source_package, source_version, license, synthetic, source_sample_rate, origin
    splits.json    speakers and noise kinds per split, the seed
    skipped.csv    input files left out (unreadable, empty, silent) and why
    licenses/<package>.copyright   the packages' copyright files (attribution)
    .debs/         downloaded packages (cache), .state/  per-unit build records

The build is split into *units* (a speech source, a noise package, a generated noise kind, the
test set). A unit whose inputs and settings are unchanged and whose files are all present is
not rebuilt, so a rerun after an interruption or a failure only does what is missing. A unit
that fails (package not downloadable, tool missing) is reported with what to do; the others are
still built, and nothing half-written is left behind (every file is written to a temporary name
and renamed).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from cleancodec.core.atomic import atomic_path, write_json_atomic
from cleancodec.core.audio import write_audio_atomic
from cleancodec.core.corpus_index import IndexRow, write_index
from cleancodec.core.hashing import fingerprint
from cleancodec.datagen.demo.config import (
    SPLITS,
    DemoDataConfig,
    NoisePackage,
    SpeechSource,
    require_sources,
    split_of_speaker,
)
from cleancodec.datagen.demo.debs import AptFetcher, PackageError, deb_version, unpack_deb
from cleancodec.datagen.demo.g722_codec import G722Unavailable
from cleancodec.datagen.demo.index import (
    STATE_VERSION,
    Skipped,
    UnitState,
    load_unit,
    save_unit,
    write_skipped,
)
from cleancodec.datagen.demo.noise_real import (
    build_noise_package,
    copyright_licenses,
    load_noise_files,
)
from cleancodec.datagen.demo.speech import common_base, list_files, load_prompts, write_sessions
from cleancodec.datagen.demo.splits import check_disjoint, hold_out
from cleancodec.datagen.demo.testset import TESTSET_DIR, build_testset
from cleancodec.datagen.noise_synth import BabbleSource, generate
from cleancodec.pipeline.mix import window_rng

SPLITS_NAME = "splits.json"
LICENSES_DIR = "licenses"
DEB_CACHE_DIR = ".debs"
GENERATED_SOURCE = "generated"
GENERATED_LICENSE = "CC0-1.0"
PCM_SUBTYPE = "PCM_16"
UNPACK_PREFIX = ".unpack-"
LEFTOVER_AGE_S = 3600  # temp files/folders older than this are from a killed run
AUDIO_DIRS = ("clean", "noise", TESTSET_DIR)
UNIT_ERRORS = (PackageError, G722Unavailable, OSError, ValueError, RuntimeError)


@dataclass
class BuildReport:
    """What a build produced: all index rows, skipped inputs, failed units, timings."""

    root: Path
    rows: list[IndexRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    removed_stale: int = 0
    seconds: float = 0.0
    unit_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each part

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class _Ctx:
    cfg: DemoDataConfig
    root: Path
    fetcher: AptFetcher
    report: BuildReport
    fingerprints: dict[str, str] = field(default_factory=dict)


def build_demo_data(cfg: DemoDataConfig, out_dir: str | Path | None = None,
                    deb_cache: str | Path | None = None) -> BuildReport:
    """Build (or complete) the demo corpus; returns a report, never raises for one bad unit.

    Parameters
    ----------
    cfg : the ``demo_data`` section (``conf/demo_data.yaml``).
    out_dir : corpus folder (default ``cfg.out_dir``).
    deb_cache : where downloaded .debs are kept (default ``cfg.deb_cache`` or ``<out>/.debs``).

    Raises ConfigError for a definition without speech sources and SplitLeak if the result would put
    one speaker or noise recording in two splits.
    """
    require_sources(cfg)
    t0 = time.perf_counter()
    root = Path(out_dir or cfg.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    cache = Path(deb_cache or cfg.deb_cache or root / DEB_CACHE_DIR)
    sweep_leftovers(root, cache)
    ctx = _Ctx(cfg, root, AptFetcher(cache, cfg.apt_update), BuildReport(root))
    for src in cfg.enabled_speech:
        _run_unit(ctx, f"speech/{src.package}", _speech_fp(ctx, src),
                  lambda u, s=src: _speech(ctx, u, s))
    for pkg in cfg.enabled_noise_packages:
        fp = fingerprint(STATE_VERSION, dataclasses.asdict(pkg),
                         dataclasses.asdict(cfg.real_noise), cfg.splits.noise_test_fraction,
                         cfg.splits.noise_val_fraction, cfg.seed, cfg.sample_rate)
        _run_unit(ctx, f"noise/{pkg.package}", fp, lambda u, p=pkg: _noise_package(ctx, u, p))
    for kind in cfg.generated.kinds:
        fp = _generated_fp(ctx, kind)
        _run_unit(ctx, f"generated/{kind}", fp, lambda u, k=kind: _generated(ctx, u, k))
    _run_unit(ctx, "testset", _testset_fp(ctx), lambda u: _testset(ctx, u))
    _finish(ctx)
    ctx.report.seconds = time.perf_counter() - t0
    return ctx.report


def _run_unit(ctx: _Ctx, unit: str, fp: str | None,
              build: Callable[[str], tuple[list[IndexRow], list[Skipped]]]) -> None:
    """Reuse a finished unit or build it; failures are recorded, never raised."""
    if fp is None:  # an input unit failed: this one cannot be built
        ctx.report.failures.append(f"{unit}: not built because a unit it depends on failed")
        return
    t0 = time.perf_counter()
    state = load_unit(ctx.root, unit, fp)
    if state is None:
        try:
            rows, skipped = build(unit)
        except UNIT_ERRORS as exc:
            ctx.report.failures.append(f"{unit}: {exc}")
            return
        state = UnitState(unit, fp, rows, skipped)
        save_unit(ctx.root, state)
        ctx.report.built.append(unit)
    else:
        ctx.report.reused.append(unit)
    ctx.report.unit_seconds[unit] = time.perf_counter() - t0
    ctx.fingerprints[unit] = fp
    ctx.report.rows += state.rows
    ctx.report.skipped += state.skipped


def _speech_fp(ctx: _Ctx, src: SpeechSource) -> str:
    split = split_of_speaker(ctx.cfg)[src.speaker]
    return fingerprint(STATE_VERSION, dataclasses.asdict(src),
                       dataclasses.asdict(ctx.cfg.sessions), split, ctx.cfg.seed,
                       ctx.cfg.sample_rate)


class _Unpacked:
    """Fetch and unpack a package into a temporary folder (removed on exit)."""

    def __init__(self, ctx: _Ctx, package: str):
        self.ctx, self.package = ctx, package

    def __enter__(self) -> tuple[Path, str]:
        deb = self.ctx.fetcher.fetch(self.package)
        self.tmp = Path(tempfile.mkdtemp(prefix=UNPACK_PREFIX, dir=self.ctx.root))
        try:
            unpack_deb(deb, self.tmp, self.package)
            _keep_copyright(self.tmp, self.ctx.root, self.package)
            return self.tmp, deb_version(deb, self.package)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _keep_copyright(tree: Path, root: Path, package: str) -> None:
    src = tree / "usr/share/doc" / package / "copyright"
    if src.is_file():
        dest = root / LICENSES_DIR / f"{package}.copyright"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)


def _speech(ctx: _Ctx, unit: str, src: SpeechSource) -> tuple[list[IndexRow], list[Skipped]]:
    cfg = ctx.cfg
    with _Unpacked(ctx, src.package) as (tree, version):
        files = list_files(tree, src.files, src.exclude)
        if not files:
            raise PackageError(src.package, f"no files match {src.files!r} in the package",
                               "fix `files` of this source in conf/demo_data.yaml")
        prompts, skipped = load_prompts(files, common_base(files, tree), unit,
                                        cfg.sample_rate, cfg.sessions)
        if not prompts:
            raise PackageError(src.package, "no usable prompt in the package")
        split = split_of_speaker(cfg)[src.speaker]
        rows = write_sessions(src, prompts, ctx.root, split, version, cfg.seed,
                              cfg.sample_rate, cfg.sessions)
    return rows, skipped


def _noise_package(ctx: _Ctx, unit: str,
                   pkg: NoisePackage) -> tuple[list[IndexRow], list[Skipped]]:
    cfg = ctx.cfg
    with _Unpacked(ctx, pkg.package) as (tree, version):
        copyright_file = tree / "usr/share/doc" / pkg.package / "copyright"
        licenses = copyright_licenses(copyright_file.read_text(errors="replace")
                                      if copyright_file.is_file() else "")
        files = list_files(tree, pkg.files, [])
        noise, skipped = load_noise_files(files, pkg, licenses, unit, cfg.sample_rate)
        if not noise:
            raise PackageError(pkg.package, f"no noise file matches {pkg.files!r} and a kind")
        rows = build_noise_package(pkg, noise, ctx.root, version, cfg.seed, cfg.sample_rate,
                                   cfg.splits.noise_test_fraction,
                                   cfg.splits.noise_val_fraction, cfg.real_noise)
    return rows, skipped


def _train_speech_units(ctx: _Ctx) -> list[str]:
    split = split_of_speaker(ctx.cfg)
    return [f"speech/{s.package}" for s in ctx.cfg.enabled_speech
            if split[s.speaker] == "train" and not s.synthetic]


def _generated_fp(ctx: _Ctx, kind: str) -> str | None:
    deps = []
    if kind == "babble":
        deps = [ctx.fingerprints.get(u) for u in _train_speech_units(ctx)]
        if not any(deps):
            return None
    settings = {k: v for k, v in dataclasses.asdict(ctx.cfg.generated).items() if k != "kinds"}
    return fingerprint(STATE_VERSION, kind, settings, ctx.cfg.seed, ctx.cfg.sample_rate, deps)


def _generated(ctx: _Ctx, unit: str, kind: str) -> tuple[list[IndexRow], list[Skipped]]:
    cfg, gen = ctx.cfg, ctx.cfg.generated
    pools, licenses = _babble_pools(ctx) if kind == "babble" else ({}, {})
    n = int(gen.seconds * cfg.sample_rate)
    rows = []
    jobs = [(split, i) for split in SPLITS for i in range(gen.files.get(split, 0))]
    for split, i in tqdm(jobs, desc=unit, unit="file", leave=False):
        rng = window_rng(cfg.seed, f"noise/generated/{kind}/{split}", i)
        audio, used = generate(kind, rng, n, cfg.sample_rate, gen, pools.get(split))
        rel = f"noise/{kind}/{kind}-{split}_{i:03d}.wav"
        write_audio_atomic(ctx.root / rel, audio, cfg.sample_rate, subtype=PCM_SUBTYPE)
        used_rel = sorted(os.path.relpath(p, ctx.root) for p in used)
        license_ = " AND ".join(sorted({licenses[p] for p in used_rel})) or GENERATED_LICENSE
        origin = " ".join(used_rel) or f"generator:{kind}:seed{cfg.seed}:{split}:{i}"
        rows.append(IndexRow(path=rel, role="noise", split=split, kind=kind,
                             duration_s=n / cfg.sample_rate, source_package=GENERATED_SOURCE,
                             license=license_, source_sample_rate=cfg.sample_rate,
                             origin=origin))
    return rows, []


def _babble_pools(ctx: _Ctx) -> tuple[dict[str, list[BabbleSource]], dict[str, str]]:
    """Training speakers' clean files, divided (seeded) into disjoint pools for the babble of
    each split, so no speech recording sits in the babble of two splits."""
    units = set(_train_speech_units(ctx))
    rows = [r for r in ctx.report.rows if r.role == "clean"
            and f"speech/{r.source_package}" in units]
    split_of = hold_out([r.path for r in rows], ctx.cfg.seed, "noise/generated/babble",
                        ctx.cfg.splits.noise_test_fraction, ctx.cfg.splits.noise_val_fraction)
    pools: dict[str, list[BabbleSource]] = {s: [] for s in SPLITS}
    for r in rows:
        frames = int(r.duration_s * ctx.cfg.sample_rate)
        pools[split_of[r.path]].append(BabbleSource(ctx.root / r.path, frames))
    return pools, {r.path: r.license for r in rows}


def _testset_fp(ctx: _Ctx) -> str | None:
    split = split_of_speaker(ctx.cfg)
    speech = [f"speech/{s.package}" for s in ctx.cfg.enabled_speech if split[s.speaker] == "test"]
    deps = [ctx.fingerprints.get(u) for u in speech]
    if not all(deps):
        return None
    noise = sorted(fp for u, fp in ctx.fingerprints.items() if not u.startswith("speech/"))
    return fingerprint(STATE_VERSION, dataclasses.asdict(ctx.cfg.testset), ctx.cfg.seed,
                       ctx.cfg.sample_rate, deps, noise)


def _testset(ctx: _Ctx, unit: str) -> tuple[list[IndexRow], list[Skipped]]:
    rows = ctx.report.rows
    clean = [r for r in rows if r.role == "clean" and r.split == "test"]
    noise = [r for r in rows if r.role == "noise" and r.split == "test"]
    return build_testset(clean, noise, ctx.root, ctx.cfg.seed, ctx.cfg.sample_rate,
                         ctx.cfg.testset), []


def _finish(ctx: _Ctx) -> None:
    rep = ctx.report
    check_disjoint(rep.rows)
    write_index(ctx.root, rep.rows)
    write_skipped(ctx.root, rep.skipped)
    write_json_atomic(ctx.root / SPLITS_NAME, splits_description(ctx.cfg, rep.rows))
    if rep.ok:
        rep.removed_stale = remove_unindexed(ctx.root, rep.rows)


def splits_description(cfg: DemoDataConfig, rows: list[IndexRow]) -> dict:
    """``splits.json``: which speakers and noise kinds each split holds, and the seed."""
    out: dict = {"seed": cfg.seed, "sample_rate": cfg.sample_rate, "splits": {}}
    for split in SPLITS:
        mine = [r for r in rows if r.split == split]
        out["splits"][split] = {
            "speakers": sorted({r.speaker for r in mine if r.role == "clean"}),
            "noise_kinds": sorted({r.kind for r in mine if r.role == "noise"}),
            "clean_files": sum(r.role == "clean" for r in mine),
            "noise_files": sum(r.role == "noise" for r in mine),
        }
    return out


def sweep_leftovers(root: Path, cache: Path, max_age_s: float = LEFTOVER_AGE_S) -> int:
    """Remove temporary files and folders a killed build left behind (older than ``max_age_s``).

    Interrupted builds clean up after themselves; only a hard kill leaves ``.unpack-*`` folders,
    ``.download-*`` folders or ``.<name>.tmp`` files. Younger ones may belong to a build running
    right now and are left alone.
    """
    now = time.time()
    candidates = [*root.glob(f"{UNPACK_PREFIX}*"), *Path(cache).glob(".download-*")]
    for sub in AUDIO_DIRS:
        candidates += list((root / sub).rglob(".*.tmp")) if (root / sub).is_dir() else []
    removed = 0
    for path in candidates:
        try:
            if now - path.stat().st_mtime < max_age_s:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def remove_unindexed(root: Path, rows: list[IndexRow]) -> int:
    """Delete ``.wav`` files under the corpus's audio folders that the index does not list.

    They are left over from an earlier configuration (fewer sessions, another seed); removing
    them keeps "every file in clean/ and noise/ is in the index" true for tools that walk the
    folders. Called only after a build in which every unit succeeded.
    """
    listed = {(root / r.path).resolve() for r in rows}
    removed = 0
    for sub in AUDIO_DIRS:
        for path in (root / sub).rglob("*.wav") if (root / sub).is_dir() else []:
            if path.resolve() not in listed:
                path.unlink()
                removed += 1
    return removed
