"""Published results (``published.yaml`` beside this module) and the chart that compares a run.

``load_benchmark(name)`` reads one benchmark (its test set, the metrics it reports and the
published systems with their references); ``comparison_png(...)`` draws a run's means with their
95 % confidence intervals beside the published numbers, one panel per metric; ``write_comparison``
writes it as ``compare_<name>.png`` in an evaluation folder.

A run is compared on its own test set unless the user declares it is the published one
(``evaluate.same_testset``); the chart says which, and warns when a declared set does not have
the published number of files. When the codec was random-init the random-codec banner heads it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cleancodec.core.atomic import write_bytes_atomic
from cleancodec.infer.metrics import COLUMNS

DATA_FILE = "published.yaml"
CHART_PREFIX = "compare_"
OWN_COLOUR, PUBLISHED_COLOUR, INPUT_COLOUR = "#d1495b", "#4a6fa5", "#9aa5b1"
UNCHECKED_MARK = "†"
PANEL_WIDTH, ROW_HEIGHT, HEADER_HEIGHT = 3.2, 0.34, 1.2  # inches
VALUE_MARGIN = 0.15  # x-axis room around the values, as a fraction of their spread
CHART_DPI = 110


@dataclass
class PublishedSystem:
    """One published row: name, scores by evaluate column, reference and its table."""

    name: str
    scores: dict[str, float]
    reference: dict[str, Any]
    table: str
    checked: bool
    kind: str = "system"  # "input" for the unprocessed (noisy) row
    as_reported_in: dict[str, Any] | None = None

    def citation(self) -> str:
        """``Authors, "Title", venue year — table`` (and who quoted it, when not the paper)."""
        ref = self.reference
        text = f"{ref['authors']}, \"{ref['title']}\", {ref['venue']} {ref['year']}"
        if self.as_reported_in:
            quoted = self.as_reported_in
            first, *others = quoted["authors"].split(",")
            text += f"; as reported in {first}{' et al.' if others else ''} {quoted['year']}"
        text += f" — {self.table}"
        if not self.checked:
            text += " (not checked against the paper's table)"
        return text


@dataclass
class Benchmark:
    """A published test set and the systems reported on it."""

    name: str
    title: str
    testset: str
    n_files: int
    metrics: list[str]
    systems: list[PublishedSystem] = field(default_factory=list)
    testset_reference: dict[str, Any] | None = None


def _data() -> dict[str, Any]:
    text = resources.files("cleancodec.infer").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def benchmark_names() -> list[str]:
    """The names ``--compare`` accepts."""
    return sorted(_data()["benchmarks"])


def load_benchmark(name: str) -> Benchmark:
    """The benchmark ``name`` of ``published.yaml``; ValueError naming the known ones."""
    data = _data()
    refs = data["references"]
    if name not in data["benchmarks"]:
        raise ValueError(f"{DATA_FILE}: no published results named {name!r}; known: "
                         f"{sorted(data['benchmarks'])}")
    spec = data["benchmarks"][name]
    systems = []
    for row in spec["systems"]:
        for key in [row["ref"], row.get("as_reported_in")]:
            if key is not None and key not in refs:
                raise ValueError(f"{DATA_FILE}: {name}/{row['name']} cites unknown reference "
                                 f"{key!r}")
        quoted = row.get("as_reported_in")
        systems.append(PublishedSystem(
            name=row["name"], scores={k: float(v) for k, v in row["scores"].items()},
            reference=refs[row["ref"]], table=row["table"], checked=bool(row["checked"]),
            kind=row.get("kind", "system"), as_reported_in=refs[quoted] if quoted else None))
    return Benchmark(name=name, title=spec["title"], testset=spec["testset"],
                     n_files=int(spec["n_files"]), metrics=list(spec["metrics"]), systems=systems,
                     testset_reference=refs.get(spec.get("testset_ref", "")))


def note_on_testset(bench: Benchmark, same_testset: bool, n_files: int) -> str:
    """What the chart says about the test set the run was scored on."""
    if not same_testset:
        return f"test set: yours ({n_files} files), not the {bench.testset}"
    if n_files != bench.n_files:
        return (f"test set: declared the {bench.testset}, but {n_files} files were scored "
                f"(published: {bench.n_files})")
    return f"test set: the {bench.testset} ({n_files} files)"


def _own_rows(stats: dict[str, dict[str, dict[str, Any]]]) -> list[tuple[str, str, dict]]:
    """(label, kind, metric → mean_ci) for the run's own noisy and enhanced rows."""
    rows = []
    if "noisy" in stats:
        rows.append(("noisy (this test set)", "own-input", stats["noisy"]))
    if "enhanced" in stats:
        rows.append(("this run", "own", stats["enhanced"]))
    return rows


def comparison_png(bench: Benchmark, stats: dict[str, dict[str, dict[str, Any]]], n_files: int,
                   same_testset: bool = False, banner: str | None = None) -> bytes:
    """PNG bytes: one horizontal bar panel per metric of ``bench``; published systems in blue
    (unchecked ones marked †), this run's noisy and enhanced means in red with 95 % CI error
    bars; a metric the run did not compute says so in its panel.

    ``stats`` is ``summarize``'s output: condition → metric → ``{mean, ci95, n}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = _own_rows(stats)
    labels = [s.name + ("" if s.checked else f" {UNCHECKED_MARK}") for s in bench.systems]
    labels += [label for label, _, _ in own]
    n_rows = len(labels)
    height = HEADER_HEIGHT + ROW_HEIGHT * n_rows
    fig, axes = plt.subplots(1, len(bench.metrics), squeeze=False, sharey=True,
                             figsize=(PANEL_WIDTH * len(bench.metrics), height),
                             layout="constrained")
    y = list(range(n_rows))[::-1]  # first system on top
    for ax, metric in zip(axes[0], bench.metrics):
        values, errors, colours, missing = [], [], [], []
        for s in bench.systems:
            values.append(s.scores.get(metric))
            errors.append(0.0)
            colours.append(INPUT_COLOUR if s.kind == "input" else PUBLISHED_COLOUR)
            missing.append("not reported")
        for _, kind, cond in own:
            entry = cond.get(metric) or {}
            values.append(entry.get("mean"))
            errors.append(entry.get("ci95") or 0.0)
            colours.append(INPUT_COLOUR if kind == "own-input" else OWN_COLOUR)
            missing.append("not computed")
        shown = [(v, e) for v, e in zip(values, errors) if v is not None]
        if not shown:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center")
            continue
        lo = min(v - e for v, e in shown)
        hi = max(v + e for v, e in shown)
        pad = max(hi - lo, abs(hi) * 0.05, 1e-3) * VALUE_MARGIN
        left = lo - pad
        for yi, v, e, c, why in zip(y, values, errors, colours, missing):
            if v is None:
                ax.text(left, yi, f"  {why}", va="center", fontsize=7, color="#666666")
                continue
            ax.barh(yi, v - left, left=left, color=c, height=0.7,
                    xerr=e if e else None, error_kw={"capsize": 3, "lw": 1})
            ax.text(v + e, yi, f" {v:.3f}" + (f"±{e:.3f}" if e else ""), va="center",
                    fontsize=7)
        ax.set_xlim(left, hi + 3 * pad)
        ax.set_ylim(-0.6, n_rows - 0.4)
        ax.set_title(COLUMNS.get(metric, metric.upper()), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels(labels, fontsize=8)
    lines = [banner] if banner else []
    lines += [f"{bench.title}: published results and this run (error bars: 95 % CI)",
              note_on_testset(bench, same_testset, n_files)]
    title = fig.suptitle("\n".join(lines), fontsize=8)
    if banner:
        title.set_color(OWN_COLOUR)
    if any(not s.checked for s in bench.systems):
        fig.supxlabel(f"{UNCHECKED_MARK} not checked against the paper's table", fontsize=6,
                      color="#666666", x=0.01, ha="left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI)
    plt.close(fig)
    return buf.getvalue()


def chart_name(benchmark: str) -> str:
    """The comparison chart's file name inside an evaluation folder."""
    return f"{CHART_PREFIX}{benchmark}.png"


def write_comparison(out_dir: str | Path, benchmark: str,
                     stats: dict[str, dict[str, dict[str, Any]]], n_files: int,
                     same_testset: bool = False, banner: str | None = None) -> Path:
    """Write ``compare_<benchmark>.png`` into ``out_dir``; returns its path."""
    bench = load_benchmark(benchmark)
    png = comparison_png(bench, stats, n_files, same_testset, banner)
    return write_bytes_atomic(Path(out_dir) / chart_name(benchmark), png)


__all__ = ["Benchmark", "PublishedSystem", "benchmark_names", "chart_name", "comparison_png",
           "load_benchmark", "note_on_testset", "write_comparison"]
