"""Plain-text summary tables of a built corpus (speakers, minutes per split, noise kinds)."""
from __future__ import annotations

from collections import defaultdict

from cleancodec.core.corpus_index import IndexRow
from cleancodec.datagen.demo.config import SPLITS
from cleancodec.datagen.demo.index import Skipped

SECONDS_PER_MINUTE = 60.0


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def _minutes(rows: list[IndexRow]) -> float:
    return sum(r.duration_s for r in rows) / SECONDS_PER_MINUTE


def speaker_table(rows: list[IndexRow]) -> str:
    clean = [r for r in rows if r.role == "clean"]
    by_spk: dict[str, list[IndexRow]] = defaultdict(list)
    for r in clean:
        by_spk[r.speaker].append(r)
    body = []
    for spk, rs in sorted(by_spk.items(), key=lambda kv: (SPLITS.index(kv[1][0].split), kv[0])):
        langs = ",".join(sorted({r.language for r in rs}))
        band = "8 kHz" if min(r.source_sample_rate for r in rs) < 16000 else "16 kHz"
        kind = "synthetic" if rs[0].synthetic else "recorded"
        body.append([spk, rs[0].split, langs, kind, band, str(len(rs)), f"{_minutes(rs):.1f}"])
    return _table(["speaker", "split", "language", "voice", "source", "files", "minutes"], body)


def split_table(rows: list[IndexRow]) -> str:
    body = []
    for split in SPLITS:
        clean = [r for r in rows if r.role == "clean" and r.split == split]
        noise = [r for r in rows if r.role == "noise" and r.split == split]
        body.append([split, str(len({r.speaker for r in clean})), f"{_minutes(clean):.1f}",
                     str(len({r.kind for r in noise})), str(len(noise)), f"{_minutes(noise):.1f}"])
    return _table(["split", "speakers", "speech min", "noise kinds", "noise files", "noise min"],
                  body)


def noise_table(rows: list[IndexRow]) -> str:
    noise = [r for r in rows if r.role == "noise"]
    kinds = sorted({r.kind for r in noise})
    body = []
    for kind in kinds:
        rs = [r for r in noise if r.kind == kind]
        per_split = [f"{_minutes([r for r in rs if r.split == s]):.1f}" for s in SPLITS]
        source = ",".join(sorted({r.source_package for r in rs}))
        body.append([kind, *per_split, str(len(rs)), source])
    return _table(["noise kind", *(f"{s} min" for s in SPLITS), "files", "source"], body)


def testset_line(rows: list[IndexRow]) -> str:
    noisy = [r for r in rows if r.role == "testset-noisy"]
    if not noisy:
        return "test set: not built"
    speakers = ",".join(sorted({r.speaker for r in noisy}))
    kinds = len({r.kind for r in noisy})
    return (f"test set: {len(noisy)} clips x {noisy[0].duration_s:.0f} s "
            f"({_minutes(noisy):.1f} min), speaker(s) {speakers}, {kinds} noise kinds")


def summary(rows: list[IndexRow], skipped: list[Skipped]) -> str:
    """The full summary printed at the end of ``make demo-data``."""
    parts = [speaker_table(rows), "", split_table(rows), "", noise_table(rows), "",
             testset_line(rows)]
    if skipped:
        parts.append(f"skipped {len(skipped)} input file(s) (listed in skipped.csv)")
    return "\n".join(parts)
