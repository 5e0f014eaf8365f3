"""The ``cleancodec`` command: one subcommand per stage, each a thin wrapper over one typed
stage function (``cleancodec.pipeline.build.run_cache``, ``cleancodec.trainer.loop.fit``,
``cleancodec.infer.run.run_denoise``, ``cleancodec.infer.evaluate.run_evaluate``, the demo's in
``cleancodec.datagen.demo``). Every stage takes ``section.key=value`` overrides after its
options (see ``cleancodec.core.config``); an option such as ``--steps`` is a shorthand for
one of them."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from cleancodec.core.stopping import SIGNAL_EXIT_BASE, StopRequested

WATCH_POLL_SECONDS = 5.0  # how often the watcher started by `train --watch` looks for checkpoints


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cleancodec")
def main() -> None:
    """cleancodec: speech denoising in the latent space of the DAC 16 kHz codec."""


def codec_options(func):
    """``--codec`` / ``--codec-weights``, shared by every stage that loads the codec."""
    func = click.option(
        "--codec-weights", "codec_weights", type=click.Path(dir_okay=False), default=None,
        help="DAC 16 kHz weights (.pth in DAC's release format). Default: dac's cache "
             "~/.cache/descript/dac/, downloaded through dac when online.")(func)
    func = click.option(
        "--codec", "codec", default=None,
        help="'random' for a seeded random-init DAC (offline pipeline checks; audio is "
             "meaningless), or a weights path (same as --codec-weights).")(func)
    return func


def option_overrides(section: str, values: dict[str, object]) -> list[str]:
    """Command-line options as ``section.key=value`` overrides (options left unset are skipped).

    The options are shorthands; they are applied before the explicit ``KEY=VALUE`` arguments,
    so an explicit override wins. Strings (paths) are quoted so that YAML reads them verbatim.
    """
    def text(value: object) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (int, float)):
            return repr(value)
        return "'" + str(value).replace("'", "''") + "'"

    return [f"{section}.{key}={text(value)}" for key, value in values.items() if value is not None]


def resolve_codec_choice(codec: str | None, codec_weights: str | None) -> str | None:
    """Merge ``--codec`` and ``--codec-weights`` into one ``codec.weights`` override (or None)."""
    if codec and codec_weights and codec != codec_weights:
        raise click.UsageError("give either --codec or --codec-weights, not both")
    return codec_weights or codec


# --- cache (pipeline/build.py) --------------------------------------------------------------


@main.command("cache")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile with `codec` and `cache` sections (e.g. conf/cache.yaml).")
@codec_options
@click.option("--clean", type=click.Path(file_okay=False), default=None,
              help="Clean speech folder (recursive). Default: cache.clean of the profile.")
@click.option("--noise", type=click.Path(file_okay=False), default=None,
              help="Noise folder (recursive). Default: cache.noise of the profile.")
@click.option("--rir", type=click.Path(file_okay=False), default=None,
              help="Room impulse responses (optional; used with cache.mix.reverb_prob).")
@click.option("--out", "out_dir", default="data/cache", show_default=True,
              help="Cache folder, or an object-store URL (s3://bucket/path, gs://…): built in "
                   "a local staging folder, then uploaded, the manifest last.")
@click.option("--storage", type=click.Choice(["zarr", "webdataset"]), default=None,
              help="Storage format. Default: cache.storage of the profile (zarr).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Encoding processes on this machine (each loads its own codec).")
@click.option("--overwrite", is_flag=True,
              help="Delete a cache built with another codec/config in --out and rebuild.")
@click.option("--verify", is_flag=True,
              help="On resume, re-hash every finished shard (default: check sizes).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("overrides", nargs=-1, metavar="[codec|cache.KEY=VALUE]...")
def cache_command(conf, codec, codec_weights, clean, noise, rir, out_dir, storage, workers,
                  overwrite, verify, quiet, overrides):
    """Mix clean speech with noise, encode both with DAC, and write the sharded latent cache.

    Resumable: rerun the same command after an interruption and only unfinished shards are
    built. Under torchrun each rank builds its share of the shards. Bad input files are
    skipped and listed in <out>/rejected.tsv; exits non-zero only when no usable input remains.
    """
    from cleancodec.core import remote
    from cleancodec.core.codec import CodecWeightsError
    from cleancodec.core.config import ConfigError, check_overrides
    from cleancodec.pipeline.build import BuildError, run_cache
    from cleancodec.pipeline.manifest import MANIFEST_NAME

    target = out_dir
    try:
        check_overrides(overrides, ("codec", "cache"), "cache")
        if remote.is_url(target):
            remote.check_writable(target)
            out_dir = str(remote.staging_dir(target))
            click.echo(f"building in {out_dir}, then uploading to {target}", err=True)
        summary = run_cache(conf, resolve_codec_choice(codec, codec_weights), clean, noise, rir,
                            out_dir, storage, workers, overwrite, verify, progress=not quiet,
                            overrides=overrides)
        if target != out_dir and summary.rank == 0:
            n = remote.upload_tree(Path(out_dir), target, MANIFEST_NAME, progress=not quiet)
            click.echo(f"uploaded {n} files to {target}", err=True)
    except StopRequested as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(exc.exit_code) from exc
    except (BuildError, CodecWeightsError, ConfigError, ValueError, RuntimeError,
            OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if summary.rank == 0:
        click.echo(summary.text())
    if not summary.complete and summary.rank == 0:
        raise SystemExit(1)


def start_watcher(run_dir: str, testset: str, conf: str | None,
                  codec: str | None) -> subprocess.Popen:
    """``cleancodec watch RUN --testset DIR`` as a child process following the run."""
    cmd = [sys.executable, "-m", "cleancodec", "watch", str(run_dir), "--testset", str(testset),
           "--poll", str(WATCH_POLL_SECONDS), "--started-after", str(time.time())]
    if conf:
        cmd += ["--conf", str(conf)]
    if codec:
        cmd += ["--codec", str(codec)]
    click.echo(f"watcher: {' '.join(cmd[2:])}", err=True)
    return subprocess.Popen(cmd)


def stop_watcher(watcher: subprocess.Popen | None) -> None:
    if watcher is not None and watcher.poll() is None:
        watcher.terminate()
        watcher.wait()


# --- config -----------------------------------------------------------------------------------


@main.command("config")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile to resolve (default: the schemas' defaults alone).")
@click.argument("args", nargs=-1, metavar="[SECTION]... [section.KEY=VALUE]...")
def config_command(conf, args):
    """Print the resolved configuration: every key of the named sections (default: all) after
    the profile and the overrides, as YAML. What a stage would run with, before it runs."""
    from cleancodec.core.config import (
        SECTIONS,
        ConfigError,
        check_overrides,
        split_overrides,
        to_yaml,
    )
    from cleancodec.schemas import resolve

    overrides, names = split_overrides(args)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise click.UsageError(f"unknown section(s) {unknown}; known: {list(SECTIONS)}")
    names = names or list(SECTIONS)
    try:
        check_overrides(overrides, names, "config")
        resolved = {n: resolve(conf, n, overrides) for n in names}
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(to_yaml(resolved), nl=False)


# --- train (trainer/loop.py) -----------------------------------------------------------------


@main.command("train")
@click.option("--conf", type=click.Path(dir_okay=False), default="conf/train.yaml",
              show_default=True, help="Profile with a `train` section.")
@click.option("--cache", "cache_dir", default="data/cache",
              show_default=True, help="Latent cache written by `cleancodec cache`: a folder or "
                                      "a URL (http(s)://, s3://, gs://, pipe:CMD with {}).")
@click.option("--run", "--run-dir", "run_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder (checkpoints, metrics.jsonl, tensorboard/). Default: runs/<name>. "
                   "Under torchrun spell it --run-dir (torchrun reads --run as its --run-path).")
@click.option("--preset", default=None, help="Model preset (medium | large); = train.preset.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="= train.steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Windows per step per process; = train.data.batch_size.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader workers per process; = train.data.num_workers.")
@click.option("--device", default=None, help="auto | cpu | cuda; = train.device.")
@click.option("--restart", is_flag=True,
              help="Start over: move the run folder's previous files into restarted-<time>/.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--watch", "watch_testset", type=click.Path(exists=True, file_okay=False),
              default=None, help="Also start `cleancodec watch RUN --testset DIR` beside the "
                                 "trainer (its own process: the trainer never loads the codec).")
@click.option("--watch-conf", type=click.Path(dir_okay=False), default=None,
              help="Profile of the watcher (codec / denoise / evaluate sections).")
@click.option("--watch-codec", default=None,
              help="The watcher's codec: 'random' or a DAC weights path (default: the run's "
                   "random-init codec, else dac's cached weights).")
@click.argument("overrides", nargs=-1, metavar="[train.KEY=VALUE]...")
def train_command(conf, cache_dir, run_dir, preset, steps, batch_size, workers, device, restart,
                  quiet, watch_testset, watch_conf, watch_codec, overrides):
    """Train the latent denoiser (GAN) on a latent cache; never loads the codec.

    Any key of the profile's `train` section can be set after the options, e.g.
    `train.steps=500 train.optim.lr_g=2e-4`. Rerunning the same command resumes from
    <run>/latest.pt. Launch with `torchrun --standalone --nproc_per_node N -m cleancodec train
    --run-dir DIR ...` for multi-GPU (DDP).
    """
    from cleancodec.core.config import ConfigError, check_overrides
    from cleancodec.core.dirlock import DirectoryLockedError
    from cleancodec.core.topology import is_main_process
    from cleancodec.pipeline.manifest import ManifestError
    from cleancodec.trainer.checkpoint import CheckpointError
    from cleancodec.trainer.config import load_train_config
    from cleancodec.trainer.data import CacheDataError
    from cleancodec.trainer.loop import fit

    items = option_overrides("train", {"steps": steps, "data.batch_size": batch_size,
                                       "data.num_workers": workers, "device": device,
                                       "progress": False if quiet else None})
    watcher = None
    try:
        check_overrides(overrides, ("train",), "train")
        cfg = load_train_config(conf, preset, [*items, *overrides])
        run_dir = run_dir or f"runs/{cfg.run_name}"
        if watch_testset and is_main_process():
            watcher = start_watcher(run_dir, watch_testset, watch_conf, watch_codec)
        result = fit(cfg, cache_dir, run_dir, restart=restart)
    except StopRequested as exc:
        stop_watcher(watcher)
        if is_main_process():
            click.echo(str(exc), err=True)
        raise SystemExit(exc.exit_code) from exc
    except (ConfigError, ManifestError, CheckpointError, CacheDataError, FloatingPointError,
            DirectoryLockedError, OSError) as exc:
        stop_watcher(watcher)
        raise click.ClickException(str(exc)) from exc
    if not is_main_process():
        return
    if watcher is not None:
        click.echo("training done; the watcher is scoring the last checkpoints …", err=True)
        if watcher.wait() != 0:
            click.echo(f"the watcher failed (exit {watcher.returncode}); the run itself is fine",
                       err=True)
    click.echo(
        f"step {result['step']}: val latent L1 {result['val/latent_l1']:.6g} "
        f"(noisy {result['val/noisy_l1']:.6g}), gain {result['val/gain']:.4f} "
        f"(1.0 = no change), best L1 {result['best/latent_l1']:.6g}\nrun: {result['run_dir']}"
    )


# --- the demo (cleancodec/datagen/demo/) ---------------------------------------------------


@main.group("demo")
def demo_group() -> None:
    """The demo: corpus (`data`), weights check (`preflight`), test-set excerpt (`testset`).

    `make demo` chains these with `cache`, `train`, `denoise` and `evaluate`."""


@demo_group.command("data")
@click.option("--conf", type=click.Path(dir_okay=False), default="conf/demo_data.yaml",
              show_default=True, help="Profile with a `demo_data` section.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Corpus folder. Default: demo_data.out_dir (data/demo).")
@click.option("--deb-cache", type=click.Path(file_okay=False), default=None,
              help="Where downloaded .debs are kept. Default: <out>/.debs.")
@click.option("--no-apt-update", is_flag=True,
              help="Never run `apt-get update`; only say when it is needed.")
@click.argument("overrides", nargs=-1, metavar="[demo_data.KEY=VALUE]...")
def demo_data_command(conf, out_dir, deb_cache, no_apt_update, overrides):
    """Build the demo corpus: real speech and noise from Debian packages, generated noise,
    speaker-disjoint splits and a DNS-style test set. Reruns only do what is missing; exits
    non-zero when a part could not be built (the message says what to do)."""
    from cleancodec.core.config import ConfigError, check_overrides, load_section
    from cleancodec.datagen.demo.build import build_demo_data
    from cleancodec.datagen.demo.config import DemoDataConfig
    from cleancodec.datagen.demo.summary import summary

    try:
        check_overrides(overrides, ("demo_data",), "demo data")
        cfg = load_section(conf, "demo_data", DemoDataConfig, overrides)
        if no_apt_update:
            cfg.apt_update = "never"
        report = build_demo_data(cfg, out_dir, deb_cache)
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary(report.rows, report.skipped))
    removed = f"; removed {report.removed_stale} stale file(s)" if report.removed_stale else ""
    click.echo(f"\n{report.root}: built {len(report.built)} part(s), reused "
               f"{len(report.reused)} in {report.seconds:.1f} s{removed}")
    for failure in report.failures:
        click.echo(f"FAILED {failure}", err=True)
    if report.failures:
        raise SystemExit(1)


main.add_command(demo_data_command, "demo-data")  # `cleancodec demo-data`, the same command


@demo_group.command("preflight")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile with a `codec` section (e.g. conf/demo.yaml).")
@click.option("--codec", default=None, help="'random' or a DAC weights path.")
def demo_preflight_command(conf, codec):
    """Check that the codec the demo needs can be loaded; say what to do when it cannot."""
    from cleancodec.datagen.demo.preflight import run_preflight

    status, text = run_preflight(conf, codec)
    click.echo(text, err=status != 0)
    raise SystemExit(status)


@demo_group.command("testset")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile with a `demo` section (demo.testset_clips).")
@click.option("--corpus", type=click.Path(file_okay=False), default="data/demo",
              show_default=True, help="The demo corpus (its testset/ folder).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Where clean/ and noisy/ of the excerpt go.")
def demo_testset_command(conf, corpus, out):
    """Copy the first demo.testset_clips clean/noisy pairs of the demo test set into OUT."""
    from cleancodec.core.config import ConfigError
    from cleancodec.datagen.demo.excerpt import run_testset_excerpt

    try:
        names = run_testset_excerpt(out, corpus, conf)
    except (ConfigError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"demo test set: {len(names)} clean/noisy pairs in {out}")


# --- watch (infer/watch.py) -------------------------------------------------------------------


@main.command("watch")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--testset", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder with clean/ and noisy/ audio (e.g. the demo's test-set excerpt).")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile with `codec`, `denoise` and `evaluate` sections.")
@codec_options
@click.option("--once", is_flag=True, help="Score the checkpoints there now and exit.")
@click.option("--poll", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between looks for new checkpoints.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Stop waiting for the run after this many seconds.")
@click.option("--started-after", type=float, default=0.0, hidden=True,
              help="Only a summary.json newer than this epoch time ends the run.")
@click.argument("overrides", nargs=-1, metavar="[section.KEY=VALUE]...")
def watch_command(run_dir, testset, conf, codec, codec_weights, once, poll, timeout,
                  started_after, overrides):
    """Score each new best.pt / step_<N>.pt of RUN with audio metrics (DNSMOS, PESQ, STOI,
    SI-SDR, speaker similarity) on a test set: RUN/eval/eval.jsonl, RUN/eval/scores.png and
    TensorBoard (RUN/tensorboard/eval). Follows a live run until it ends; the trainer itself
    never loads the codec."""
    from cleancodec.core.config import ConfigError, check_overrides
    from cleancodec.core.oserrors import named_os_errors
    from cleancodec.infer.watch import summary_lines, watch_run

    items = option_overrides("codec", {"weights": resolve_codec_choice(codec, codec_weights)})
    try:
        check_overrides(overrides, ("codec", "denoise", "evaluate"), "watch")
        with named_os_errors():
            result = watch_run(run_dir, testset, conf, [*items, *overrides], follow=not once,
                               poll_seconds=poll, timeout_seconds=timeout,
                               run_started_after=started_after)
    except (ConfigError, ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n".join(summary_lines(result)))


# --- denoise and evaluate (infer/) -----------------------------------------------------------


@main.command("denoise")
@click.argument("args", nargs=-1, metavar="INPUT [OUTPUT] [section.KEY=VALUE]...")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile with `codec` and `denoise` sections (e.g. conf/denoise.yaml).")
@codec_options
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Trainer checkpoint. Default: the newest best.pt under runs/ trained on the "
                   "loaded codec's latents.")
@click.option("--bypass", is_flag=True, default=None,
              help="Codec alone (encode → quantize → decode): the quality ceiling.")
@click.option("--mix", type=click.FloatRange(0.0, 1.0), default=None,
              help="Share of the dry input blended back in (0 = none, 1 = dry only).")
@click.option("--output-sr", type=click.IntRange(min=1), default=None,
              help="Output sample rate (e.g. 16000). Default: each input's own rate.")
@click.option("--skip-existing", is_flag=True, default=None,
              help="Leave outputs that already exist untouched.")
@click.option("--allow-codec-mismatch", is_flag=True, default=None,
              help="Use a checkpoint trained on another codec's latents.")
@click.option("--batch-size", type=click.IntRange(min=0), default=None,
              help="Chunks per forward (0 = auto: 1 on CPU, 16 on GPU).")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (codec and denoiser).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: codec.num_threads, else all cores; on a busy "
                   "shared machine fewer threads than cores run faster).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--stream", is_flag=True,
              help="Stream INPUT to OUTPUT block by block, each a path or - (stdin / stdout; "
                   "OUTPUT defaults to -): WAV in, WAV out, or raw PCM with --format. The "
                   "latency (block + lookahead) is printed to stderr; stdout carries audio only.")
@click.option("--block-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="--stream: output block in ms, a multiple of 20 (default 200). Latency = "
                   "block + lookahead.")
@click.option("--format", "raw_format", type=click.Choice(["s16le", "s32le", "f32le"]),
              default=None, help="--stream: raw little-endian interleaved PCM in and out "
                                 "instead of WAV (needs --rate).")
@click.option("--rate", type=click.IntRange(min=1), default=None,
              help="--stream --format: sample rate of the raw input (other rates than 16000 "
                   "are resampled to 16 kHz and back).")
@click.option("--channels", type=click.IntRange(min=1), default=None,
              help="--stream --format: channels of the raw input (default 1).")
@click.option("--engine", type=click.Choice(["torch", "onnx"]), default="torch",
              show_default=True,
              help="torch, or onnxruntime running a graph from `cleancodec export --full` "
                   "(--onnx); files and --stream alike.")
@click.option("--onnx", "onnx_model", type=click.Path(dir_okay=False), default=None,
              help="--engine onnx: the exported full graph (.onnx).")
def denoise_command(args, conf, codec, codec_weights, checkpoint, bypass, mix, output_sr,
                    skip_existing, allow_codec_mismatch, batch_size, device, threads, quiet,
                    stream, block_ms, raw_format, rate, channels, engine, onnx_model):
    """Denoise INPUT (a file or a folder, recursively) into OUTPUT.

    OUTPUT mirrors INPUT's tree and file names (default: INPUT_denoised beside it); every
    output keeps its input's length, sample rate, channels and sample format. Exits non-zero
    when any file failed. With --stream, INPUT and OUTPUT are one stream each (a file or -),
    e.g. `sox -d -t wav - | cleancodec denoise --stream - - | play -`.
    """
    import functools

    from cleancodec.core.config import ConfigError, check_overrides, split_overrides
    from cleancodec.infer.engines import load_engine
    from cleancodec.infer.run import run_denoise

    overrides, paths = split_overrides(args)
    stream_only = {"--block-ms": block_ms, "--format": raw_format, "--rate": rate,
                   "--channels": channels}
    if not stream and any(v is not None for v in stream_only.values()):
        raise click.UsageError(f"{', '.join(k for k, v in stream_only.items() if v is not None)} "
                               "apply to --stream only")
    if stream and (skip_existing or batch_size is not None):
        raise click.UsageError("--skip-existing and --batch-size apply to file runs, not "
                               "--stream")
    if not 1 <= len(paths) <= 2:
        raise click.UsageError("give INPUT (a file or folder) and optionally OUTPUT")
    input_path, output_path = paths[0], (paths[1] if len(paths) == 2 else None)
    if not (stream and input_path == "-") and not Path(input_path).exists():
        raise click.BadParameter(f"{input_path}: no such file or folder", param_hint="INPUT")
    items = [*option_overrides("codec", {"weights": resolve_codec_choice(codec, codec_weights),
                                         "device": device, "num_threads": threads}),
             *option_overrides("denoise", {
                 "checkpoint": checkpoint, "bypass": bypass, "mix": mix, "output_sr": output_sr,
                 "skip_existing": skip_existing, "allow_codec_mismatch": allow_codec_mismatch,
                 "batch_size": batch_size})]
    if stream:
        _denoise_stream(input_path, output_path or "-", conf, [*items, *overrides], overrides,
                        block_ms, raw_format, rate, channels, engine, onnx_model)
        return
    try:
        check_overrides(overrides, ("codec", "denoise"), "denoise")
        summary, output = run_denoise(input_path, output_path, conf, [*items, *overrides],
                                      progress=not quiet,
                                      load=functools.partial(load_engine, engine, onnx_model))
    except (ConfigError, ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n".join(summary.lines()))
    click.echo(f"output: {output}")
    if summary.stopped_by:
        raise SystemExit(SIGNAL_EXIT_BASE + signal.Signals[summary.stopped_by])
    if summary.failed:
        raise SystemExit(1)


def _denoise_stream(input_path: str, output_path: str, conf: str | None, items: list[str],
                    overrides: list[str], block_ms: float | None, raw_format: str | None,
                    rate: int | None, channels: int | None, engine: str,
                    onnx_model: str | None) -> None:
    """``cleancodec denoise --stream``: everything but audio goes to stderr."""
    from cleancodec.core.config import ConfigError, check_overrides
    from cleancodec.infer.stream import DEFAULT_BLOCK_MS
    from cleancodec.infer.streamio import StreamOptions, run_stream

    opts = StreamOptions(block_ms=DEFAULT_BLOCK_MS if block_ms is None else block_ms,
                         raw_format=raw_format, rate=rate, channels=channels or 1)
    try:
        check_overrides(overrides, ("codec", "denoise"), "denoise")
        summary = run_stream(input_path, output_path, conf, items, opts, engine, onnx_model)
    except (ConfigError, ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n".join(summary.lines()), err=True)
    if summary.stopped_by in signal.Signals.__members__:
        raise SystemExit(SIGNAL_EXIT_BASE + signal.Signals[summary.stopped_by])


@main.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True,
              help="The whole 16 kHz graph (DAC encoder → denoiser → quantizer → decoder, "
                   "dynamic length in whole 20 ms frames) for `denoise --engine onnx`; "
                   "default: the denoiser alone (raw latents, dynamic frame axis).")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="--full: profile with a `codec` section (the codec the checkpoint was "
                   "trained on).")
@codec_options
@click.option("--allow-codec-mismatch", is_flag=True, default=None,
              help="--full: use a checkpoint trained on another codec's latents.")
@click.argument("overrides", nargs=-1, metavar="[codec|denoise.KEY=VALUE]...")
def export_command(checkpoint, output, full, conf, codec, codec_weights, allow_codec_mismatch,
                   overrides):
    """Export CHECKPOINT's denoiser (or with --full the whole enhancement graph) to ONNX.

    The file is checked with onnxruntime against torch before it is renamed into place; the
    maximum absolute difference is printed.
    """
    from cleancodec.core.codec import CodecWeightsError
    from cleancodec.core.config import ConfigError, check_overrides
    from cleancodec.infer.export import run_export

    items = [*option_overrides("codec", {"weights": resolve_codec_choice(codec, codec_weights)}),
             *option_overrides("denoise", {"allow_codec_mismatch": allow_codec_mismatch})]
    try:
        check_overrides(overrides, ("codec", "denoise"), "export")
        report = run_export(checkpoint, output, full, conf, [*items, *overrides])
    except (CodecWeightsError, ConfigError, ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n".join(report.lines()))


@main.command("evaluate")
@click.option("--enhanced", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of enhanced files.")
@click.option("--clean", type=click.Path(exists=True, file_okay=False), default=None,
              help="Clean references. Without it: reference-free mode (DNSMOS only).")
@click.option("--noisy", type=click.Path(exists=True, file_okay=False), default=None,
              help="Noisy inputs: scored too, as the baseline row.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Where per_file.csv, summary.json, results.md and spectrograms/ go.")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile with an `evaluate` section.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Scoring processes (0 = auto).")
@click.option("--spectrograms", type=click.IntRange(min=0), default=None,
              help="How many files get a spectrogram PNG.")
@click.option("--personalized", "dnsmos_personalized", is_flag=True, default=None,
              help="DNSMOS personalised models instead of the standard ones.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("overrides", nargs=-1, metavar="[evaluate.KEY=VALUE]...")
def evaluate_command(enhanced, clean, noisy, out, conf, workers, spectrograms,
                     dnsmos_personalized, quiet, overrides):
    """Score enhanced speech: DNSMOS, PESQ-WB, STOI, SI-SDR, speaker similarity.

    Files pair by relative path or by the DNS test-set `fileid_N` convention.
    """
    from cleancodec.core.config import ConfigError, check_overrides
    from cleancodec.infer.evaluate import run_evaluate

    items = option_overrides("evaluate", {"workers": workers, "spectrograms": spectrograms,
                                          "dnsmos_personalized": dnsmos_personalized})
    try:
        check_overrides(overrides, ("evaluate",), "evaluate")
        result = run_evaluate(enhanced, out, clean, noisy, conf, [*items, *overrides],
                              progress=not quiet)
    except (ConfigError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.table)
    for kind, paths in result.summary["unmatched"].items():
        if paths:
            click.echo(f"unmatched ({kind.replace('_', ' ')}): {len(paths)}: "
                       + ", ".join(paths[:10]) + (" …" if len(paths) > 10 else ""))
    for name, err in result.summary["failed"].items():
        click.echo(f"FAILED {name}: {err}")
    click.echo(f"per-file scores: {result.paths['csv']}\nsummary: {result.paths['summary']}\n"
               f"table: {result.paths['table']}")
    if result.paths["spectrograms"]:
        click.echo(f"spectrograms: {result.paths['spectrograms'][0].parent}/ "
                   f"({len(result.paths['spectrograms'])} PNG)")


if __name__ == "__main__":
    main()
