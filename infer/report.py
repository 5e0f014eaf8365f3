"""The listening report: ``report.html`` plus ``report/`` beside it in an evaluation folder.

One self-contained page (its CSS and JavaScript inline; no network, so it works from
``file://`` and from any static server) with:

- the random-codec banner when the codec was random-init;
- the summary table (mean ± 95 % CI per condition and metric) and, with ``--compare``, the chart
  beside published systems with their references;
- one entry per file: its metrics, and for each signal (noisy, enhanced, codec alone when given,
  clean) an ``<audio controls preload="none">`` player and its spectrogram. A file's
  spectrograms share one colour scale (the loudest bin of its signals and ``db_range`` below);
  images load lazily.

Entries sort by any metric (click its header; again to reverse) and start worst first by the
default metric (enhanced PESQ when references exist, else enhanced DNSMOS OVRL); a box filters by
file name. With more than ``3 × report_files`` files the page holds the ``report_files`` worst,
median and best ones. Audio is written beside the page as 16-bit 16 kHz mono WAV (the signal that
was scored), never inlined.
"""
from __future__ import annotations

import html
import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cleancodec.core.atomic import write_bytes_atomic, write_text_atomic
from cleancodec.core.audio import AudioError, read_audio
from cleancodec.infer.metrics import COLUMNS, SAMPLE_RATE
from cleancodec.infer.testset import Pair, list_audio

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
REPORT_DIR = "report"  # beside report.html: audio/<file>/<signal>.wav, spec/<file>/<signal>.png
SIGNALS = ("noisy", "enhanced", "codec", "clean")  # the order of the players
SIGNAL_LABELS = {"noisy": "noisy", "enhanced": "enhanced", "codec": "codec alone",
                 "clean": "clean"}
ROW_CONDITIONS = ("enhanced", "noisy")  # metric columns in the per-file table, in this order
SORT_METRICS = ("enhanced_pesq", "enhanced_dnsmos_ovrl")  # the default order, first found
SPEC_MAX_WIDTH = 480   # spectrogram columns (time frames are averaged down to this)
SPEC_FREQ_POOL = 2     # frequency bins averaged per image row
COLOURMAP = "magma"
COLOURBAR_STOPS = 8
PCM_SUBTYPE = "PCM_16"


@dataclass
class ReportEntry:
    """One file on the page: its row of scores and the group it was picked for."""

    row: dict[str, Any]
    group: str  # "worst" | "median" | "best" | "" (all files shown)


def default_sort_metric(rows: Sequence[dict[str, Any]]) -> str | None:
    """The column the page sorts by first: enhanced PESQ, else enhanced DNSMOS OVRL, else the
    first enhanced metric scored (None when nothing was)."""
    for metric in (*SORT_METRICS, *(f"enhanced_{c}" for c in COLUMNS)):
        if any(_finite(r.get(metric)) for r in rows):
            return metric
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def select_entries(rows: Sequence[dict[str, Any]], per_group: int,
                   metric: str | None) -> list[ReportEntry]:
    """Rows for the page, worst first by ``metric``: all of them when there are at most
    ``3 × per_group`` (failed files last), else the ``per_group`` worst, median and best scored
    ones."""
    scored = [r for r in rows if "error" not in r]
    if metric:
        scored.sort(key=lambda r: (not _finite(r.get(metric)),
                                   r.get(metric) if _finite(r.get(metric)) else 0.0))
    failed = [r for r in rows if "error" in r]
    ranked = [r for r in scored if metric and _finite(r.get(metric))]
    if len(rows) <= 3 * per_group or len(ranked) <= 3 * per_group:
        return [ReportEntry(r, "") for r in (scored + failed)[:3 * per_group]]
    mid = len(ranked) // 2 - per_group // 2
    picks = [("worst", ranked[:per_group]), ("median", ranked[mid:mid + per_group]),
             ("best", ranked[-per_group:])]
    return [ReportEntry(r, group) for group, part in picks for r in part]


def slug(key: str) -> str:
    """A file-system- and URL-safe folder name for a relative path."""
    stem = str(PurePosixPath(key).with_suffix(""))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__")).strip("._") or "file"


def _pooled_db(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """dB magnitude STFT ``[F' x T']``, frequency averaged by SPEC_FREQ_POOL and time averaged
    down to at most SPEC_MAX_WIDTH frames (the image the page shows)."""
    from scipy.signal import stft

    _, _, spec = stft(wave, fs=SAMPLE_RATE, nperseg=n_fft, noverlap=n_fft - hop)
    power = np.abs(spec) ** 2
    f = power.shape[0] // SPEC_FREQ_POOL * SPEC_FREQ_POOL
    power = power[:f].reshape(-1, SPEC_FREQ_POOL, power.shape[1]).mean(axis=1)
    step = max(1, math.ceil(power.shape[1] / SPEC_MAX_WIDTH))
    t = power.shape[1] // step * step
    if t:
        power = power[:, :t].reshape(power.shape[0], -1, step).mean(axis=2)
    return 10.0 * np.log10(power + 1e-20)


def spectrogram_pngs(waves: dict[str, np.ndarray], n_fft: int, hop: int,
                     db_range: float) -> dict[str, bytes]:
    """PNG bytes per signal (low frequencies at the bottom), all on one colour scale: from the
    loudest bin of any of ``waves`` (float32 ``[T]`` at 16 kHz) down ``db_range`` dB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    specs = {name: _pooled_db(w, n_fft, hop) for name, w in waves.items()}
    vmax = max(float(s.max()) for s in specs.values())
    out = {}
    for name, spec in specs.items():
        buf = io.BytesIO()
        mpimg.imsave(buf, spec, vmin=vmax - db_range, vmax=vmax, cmap=COLOURMAP,
                     origin="lower", format="png")
        out[name] = buf.getvalue()
    return out


def _write_wav(path: Path, wave: np.ndarray) -> Path:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype=PCM_SUBTYPE, format="WAV")
    return write_bytes_atomic(path, buf.getvalue())


def codec_alone_files(codec_dir: str | Path | None, keys: Sequence[str]) -> dict[str, Path]:
    """Enhanced key → the codec-alone file of the same relative path (any audio extension)."""
    if codec_dir is None:
        return {}
    files = list_audio(codec_dir)
    by_stem = {str(PurePosixPath(rel).with_suffix("")): p for rel, p in files.items()}
    found = {}
    for key in keys:
        path = files.get(key) or by_stem.get(str(PurePosixPath(key).with_suffix("")))
        if path is None:
            log.warning("report: no codec-alone file for %s in %s", key, codec_dir)
        else:
            found[key] = path
    return found


def _media(out: Path, folder: str, pair: Pair, codec_file: Path | None,
           spec_cfg: tuple[int, int, float]) -> dict[str, dict[str, str]]:
    """Write one file's WAVs and spectrograms under ``report/*/<folder>/``; signal →
    {audio, image} paths relative to ``out``."""
    paths = {"noisy": pair.noisy, "enhanced": pair.enhanced, "codec": codec_file,
             "clean": pair.clean}
    waves = {}
    for name in SIGNALS:
        if paths[name] is None:
            continue
        try:
            waves[name] = read_audio(paths[name], SAMPLE_RATE, allow_silent=True)
        except AudioError as exc:
            log.warning("report: %s skipped: %s", name, exc)
    if not waves:
        return {}
    pngs = spectrogram_pngs(waves, *spec_cfg)
    media = {}
    for name, wave in waves.items():
        audio = PurePosixPath(REPORT_DIR, "audio", folder, f"{name}.wav")
        image = PurePosixPath(REPORT_DIR, "spec", folder, f"{name}.png")
        _write_wav(out / audio, wave)
        write_bytes_atomic(out / image, pngs[name])
        media[name] = {"audio": audio.as_posix(), "image": image.as_posix()}
    return media


def _metric_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{cond}_{c}" for cond in ROW_CONDITIONS for c in COLUMNS
            if any(_finite(r.get(f"{cond}_{c}")) for r in rows)]


def _column_label(column: str) -> str:
    cond, metric = column.split("_", 1)
    label = COLUMNS.get(metric, metric)
    return label if cond == "enhanced" else f"{cond} {label}"


def _colourbar_css() -> str:
    import matplotlib

    cmap = matplotlib.colormaps[COLOURMAP]
    stops = [matplotlib.colors.to_hex(cmap(i / (COLOURBAR_STOPS - 1)))
             for i in range(COLOURBAR_STOPS)]
    return f"linear-gradient(to right, {', '.join(stops)})"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if _finite(value) else "–"


def _summary_html(stats: dict[str, dict[str, dict[str, Any]]]) -> str:
    metrics = [c for c in COLUMNS if any(c in v for v in stats.values())]
    head = "".join(f"<th>{html.escape(COLUMNS[c])}</th>" for c in metrics)
    body = []
    for cond, by_metric in stats.items():
        n = max((s["n"] for s in by_metric.values()), default=0)
        cells = []
        for c in metrics:
            s = by_metric.get(c)
            if not s or s["mean"] is None:
                cells.append("<td>–</td>")
            elif s["ci95"] is None:
                cells.append(f"<td>{s['mean']:.3f}</td>")
            else:
                cells.append(f"<td>{s['mean']:.3f} ± {s['ci95']:.3f}</td>")
        body.append(f"<tr><th>{html.escape(cond)} (n={n})</th>{''.join(cells)}</tr>")
    return (f"<table class=summary><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _entry_html(entry: ReportEntry, columns: list[str], media: dict[str, dict[str, str]]) -> str:
    row = entry.row
    key = row["file"]
    data = " ".join(f'data-{c.replace("_", "-")}="{row[c]:.6g}"' for c in columns
                    if _finite(row.get(c)))
    cells = "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns)
    group = f'<span class="group {entry.group}">{entry.group}</span>' if entry.group else ""
    note = row.get("error") or row.get("notes") or ""
    players = []
    for name in SIGNALS:
        if name not in media:
            continue
        m = media[name]
        players.append(
            f'<figure class=signal><figcaption>{SIGNAL_LABELS[name]}</figcaption>'
            f'<audio controls preload="none" src="{html.escape(m["audio"])}"></audio>'
            f'<img loading="lazy" alt="{name} spectrogram of {html.escape(key)}" '
            f'src="{html.escape(m["image"])}"></figure>')
    span = len(columns) + 1
    return (f'<tbody class=entry data-file="{html.escape(key)}" {data}>'
            f'<tr class=scores><td class=name>{html.escape(key)} {group}'
            f'<div class=note>{html.escape(note)}</div></td>{cells}</tr>'
            f'<tr class=media><td colspan={span}><div class=signals>{"".join(players)}</div>'
            f'</td></tr></tbody>')


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.banner{background:#d1495b;color:#fff;padding:.6em 1em;font-weight:bold;border-radius:4px}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;vertical-align:top}
td.name,th.name{text-align:left;min-width:9em;max-width:22em;overflow-wrap:anywhere}
table.files thead th{cursor:pointer;user-select:none;position:sticky;top:0;background:#eee}
table.files thead th.sorted.asc::after{content:" ▲"}
table.files thead th.sorted.desc::after{content:" ▼"}
tbody.entry{border-top:3px solid #bbb}
.signals{display:flex;flex-wrap:wrap;gap:.8em}
figure.signal{margin:0;display:flex;flex-direction:column;gap:.2em;width:300px}
figure.signal figcaption{text-align:left;font-weight:bold}
figure.signal img{width:300px;height:110px;image-rendering:auto;background:#000}
audio{width:300px}
.group{font-size:.8em;padding:0 .4em;border-radius:3px;color:#fff;background:#888}
.group.worst{background:#d1495b}.group.best{background:#2e8b57}
.note{font-size:.8em;color:#666}
.colourbar{display:inline-block;width:12em;height:.9em;vertical-align:middle}
#filter{font-size:1em;padding:.2em .4em;width:20em}
.refs{font-size:.85em}.chart{max-width:100%}
"""

SCRIPT = """
(function(){
  const table=document.querySelector('table.files');
  if(!table)return;
  const heads=[...table.querySelectorAll('thead th[data-sort]')];
  const count=document.getElementById('shown');
  const entries=()=>[...table.querySelectorAll('tbody.entry')];
  function value(tb,key){
    if(key==='file')return tb.dataset.file;
    const v=tb.getAttribute('data-'+key.replace(/_/g,'-'));
    return v===null?null:parseFloat(v);
  }
  function sortBy(key,dir){
    const sign=dir==='asc'?1:-1;
    const sorted=entries().sort((a,b)=>{
      const va=value(a,key),vb=value(b,key);
      if(va===null&&vb===null)return 0;
      if(va===null)return 1;
      if(vb===null)return -1;
      if(typeof va==='string')return sign*va.localeCompare(vb);
      return sign*(va-vb);
    });
    sorted.forEach(tb=>table.appendChild(tb));
    heads.forEach(h=>{h.classList.remove('sorted','asc','desc');});
    const h=heads.find(h=>h.dataset.sort===key);
    h.classList.add('sorted',dir);
  }
  heads.forEach(h=>h.addEventListener('click',()=>{
    const again=h.classList.contains('sorted');
    const dir=again&&h.classList.contains('asc')?'desc':'asc';
    sortBy(h.dataset.sort,dir);
  }));
  const box=document.getElementById('filter');
  function filter(){
    const q=box.value.trim().toLowerCase();
    let n=0;
    entries().forEach(tb=>{
      const show=!q||tb.dataset.file.toLowerCase().includes(q);
      tb.hidden=!show;
      if(show)n++;
    });
    count.textContent=n;
  }
  box.addEventListener('input',filter);
  const first=table.dataset.defaultSort;
  if(first)sortBy(first,'asc');
  filter();
})();
"""


def render_page(title: str, stats: dict[str, dict[str, dict[str, Any]]],
                entries: list[tuple[ReportEntry, dict[str, dict[str, str]]]],
                columns: list[str], sort_metric: str | None, n_files: int,
                banner: str | None = None, chart: str | None = None,
                citations: Sequence[str] = (), db_range: float = 80.0,
                failed: dict[str, str] | None = None) -> str:
    """The report page as HTML text (media paths relative to the page)."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if banner:
        parts.append(f'<p class=banner role=alert>{html.escape(banner)}</p>')
    parts.append("<h2>Summary (mean ± 95 % CI)</h2>" + _summary_html(stats))
    if chart:
        parts.append(f'<h2>Beside published results</h2><img loading="lazy" '
                     f'alt="comparison with published results" src="{html.escape(chart)}" '
                     "class=chart>")
        if citations:
            items = "".join(f"<li>{html.escape(c)}</li>" for c in citations)
            parts.append(f"<ul class=refs>{items}</ul>")
    if failed:
        items = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in failed.items())
        parts.append(f"<h2>Failed files</h2><ul>{items}</ul>")
    picked = "" if len(entries) >= n_files else (
        f" ({len(entries)} of {n_files} files: the worst, median and best by "
        f"{html.escape(_column_label(sort_metric or 'enhanced_file'))})")
    parts.append(
        f"<h2>Files{picked}</h2><p><label>Filter by name: <input id=filter type=search "
        f'placeholder="part of a file name"></label> showing <span id=shown>{len(entries)}'
        f"</span> of {len(entries)}. Click a column to sort (again to reverse). Spectrograms: "
        f'<span class=colourbar style="background:{_colourbar_css()}"></span> '
        f"{db_range:.0f} dB below each file's loudest bin → loudest.</p>")
    heads = '<th class=name data-sort="file">file</th>' + "".join(
        f'<th data-sort="{c}">{html.escape(_column_label(c))}</th>' for c in columns)
    body = "".join(_entry_html(e, columns, m) for e, m in entries)
    parts.append(f'<table class=files data-default-sort="{sort_metric or ""}">'
                 f"<thead><tr>{heads}</tr></thead>{body}</table>")
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f'<link rel=icon href="data:,"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts)
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def write_report(out: str | Path, rows: Sequence[dict[str, Any]],
                 stats: dict[str, dict[str, dict[str, Any]]], pairs: Sequence[Pair],
                 report_files: int, n_fft: int, hop: int, db_range: float,
                 banner: str | None = None, codec_dir: str | Path | None = None,
                 chart: Path | None = None, citations: Sequence[str] = (),
                 title: str = "Listening report") -> Path:
    """Write ``report.html`` and its ``report/`` folder into ``out``; returns the page's path.

    ``rows`` are evaluate's per-file rows (``file`` = enhanced relative path), ``stats`` its
    summary (condition → metric → mean_ci), ``pairs`` the paths of each file's signals.
    """
    out = Path(out)
    metric = default_sort_metric(rows)
    entries = select_entries(rows, report_files, metric)
    by_key = {p.key: p for p in pairs}
    codec = codec_alone_files(codec_dir, [e.row["file"] for e in entries])
    spec_cfg = (n_fft, hop, db_range)
    shown, folders = [], set()
    for i, entry in enumerate(entries):
        key = entry.row["file"]
        folder = slug(key)
        if folder in folders:  # two keys that differ only in characters the slug replaces
            folder = f"{folder}_{i}"
        folders.add(folder)
        pair = by_key.get(key)
        media = {} if pair is None else _media(out, folder, pair, codec.get(key), spec_cfg)
        shown.append((entry, media))
    columns = _metric_columns(rows)
    failed = {r["file"]: r["error"] for r in rows if "error" in r}
    page = render_page(title, stats, shown, columns, metric, len(rows), banner,
                       chart.relative_to(out).as_posix() if chart else None, citations,
                       db_range, failed)
    return write_text_atomic(out / REPORT_NAME, page)


__all__ = ["REPORT_DIR", "REPORT_NAME", "ReportEntry", "codec_alone_files",
           "default_sort_metric", "render_page", "select_entries", "slug", "spectrogram_pngs",
           "write_report"]
