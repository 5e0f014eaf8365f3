"""The ``cleancodec`` command: one subcommand per stage, each a thin wrapper over one typed
stage function (``cleancodec.pipeline.build.run_cache``, ``cleancodec.trainer.loop.fit``
(with ``train --watch``: ``cleancodec.infer.watcher.fit_watched``),
``cleancodec.infer.run.run_denoise``, ``cleancodec.infer.evaluate.run_evaluate``, the demo's
in ``cleancodec.datagen.demo``). Every stage takes ``section.key=value`` overrides after its
options (see ``cleancodec.core.config``); an option such as ``--steps`` is a shorthand for
one of them.

The shared parts (error handling, codec options, overrides) are in ``cleancodec.cli_common``;
the inference commands (denoise, export, evaluate, serve) in ``cleancodec.cli_infer``."""
from __future__ import annotations

import click

from cleancodec.cli_common import (
    CONFIG_ERRORS,
    STAGE_ERRORS,
    TRAIN_ERRORS,
    codec_options,
    echo_err,
    fails_cleanly,
    option_overrides,
    resolve_codec_choice,
)
from cleancodec.cli_infer import (
    denoise_command,
    evaluate_command,
    export_command,
    serve_command,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cleancodec")
def main() -> None:
    """cleancodec: speech denoising in the latent space of the DAC 16 kHz codec."""


# --- cache (pipeline/build.py) --------------------------------------------------------------


@main.command("cache")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile with `codec` and `cache` sections (e.g. conf/cache.yaml).")
@codec_options
@click.option("--clean", type=click.Path(file_okay=False), default=None,
              help="Clean speech folder (recursive). Default: cache.clean of the profile.")
@click.option("--noise", type=click.Path(file_okay=False), default=None,
              help="Noise folder (recursive). Default: cache.noise of the profile.")
@click.option("--noisy", type=click.Path(file_okay=False), default=None,
              help="Premixed noisy files paired with --clean's by relative path, file name or "
                   "DNS fileid_N (instead of --noise: nothing is mixed). Default: cache.noisy.")
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
@fails_cleanly(*STAGE_ERRORS, stop_message_on_every_rank=True)
def cache_command(conf, codec, codec_weights, clean, noise, noisy, rir, out_dir, storage,
                  workers, overwrite, verify, quiet, overrides):
    """Mix clean speech with noise, encode both with DAC, and write the sharded latent cache.

    With --noisy instead of --noise the clean/noisy pairs exist already (the seed's clean/ and
    noisy/, VoiceBank+DEMAND, DNS synthesizer output): each window is cut at the same offset
    from both sides and levelled with one gain, so the pair's SNR is kept.

    Resumable: rerun the same command after an interruption and only unfinished shards are
    built. Under torchrun each rank builds its share of the shards. Bad input files are
    skipped and listed in <out>/rejected.tsv; exits non-zero only when no usable input remains.
    """
    from cleancodec.core import remote
    from cleancodec.core.config import check_overrides
    from cleancodec.pipeline.build import run_cache
    from cleancodec.pipeline.manifest import MANIFEST_NAME

    if noise and noisy:
        raise click.UsageError(
            "--noise and --noisy exclude each other: --noise mixes --clean with noise here, "
            "--noisy takes premixed noisy files paired with --clean's; give one")
    check_overrides(overrides, ("codec", "cache"), "cache")
    codec_choice = resolve_codec_choice(codec, codec_weights)
    summary = remote.build_at(
        out_dir, lambda folder: run_cache(conf, codec_choice, clean, noise, rir, folder, storage,
                                          workers, overwrite, verify, progress=not quiet,
                                          overrides=overrides, noisy_dir=noisy),
        finalised=lambda done: done.rank == 0, manifest_name=MANIFEST_NAME,
        progress=not quiet, say=echo_err)
    if summary.rank == 0:
        click.echo(summary.text())
    if not summary.complete and summary.rank == 0:
        raise SystemExit(1)


# --- config -----------------------------------------------------------------------------------


@main.command("config")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile to resolve (default: the schemas' defaults alone).")
@click.argument("args", nargs=-1, metavar="[SECTION]... [section.KEY=VALUE]...")
@fails_cleanly(*CONFIG_ERRORS)
def config_command(conf, args):
    """Print the resolved configuration: every key of the named sections (default: all) after
    the profile and the overrides, as YAML. What a stage would run with, before it runs."""
    from cleancodec.core.config import (
        SECTIONS,
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
    check_overrides(overrides, names, "config")
    resolved = {n: resolve(conf, n, overrides) for n in names}
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
@click.option("--preset", default=None,
              help="Preset (medium | large | seed-medium | seed-large); = train.preset.")
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
@fails_cleanly(*TRAIN_ERRORS)
def train_command(conf, cache_dir, run_dir, preset, steps, batch_size, workers, device, restart,
                  quiet, watch_testset, watch_conf, watch_codec, overrides):
    """Train the latent denoiser (GAN) on a latent cache; never loads the codec.

    Any key of the profile's `train` section can be set after the options, e.g.
    `train.steps=500 train.optim.lr_g=2e-4`. Rerunning the same command resumes from
    <run>/latest.pt. Launch with `torchrun --standalone --nproc_per_node N -m cleancodec train
    --run-dir DIR ...` for multi-GPU (DDP).
    """
    from cleancodec.core.config import check_overrides
    from cleancodec.core.topology import is_main_process
    from cleancodec.infer.watcher import WatchOptions, fit_watched
    from cleancodec.trainer.config import load_train_config

    items = option_overrides("train", {"steps": steps, "data.batch_size": batch_size,
                                       "data.num_workers": workers, "device": device,
                                       "progress": False if quiet else None})
    check_overrides(overrides, ("train",), "train")
    cfg = load_train_config(conf, preset, [*items, *overrides])
    run_dir = run_dir or f"runs/{cfg.run_name}"
    watch = WatchOptions(watch_testset, watch_conf, watch_codec) if watch_testset else None
    result = fit_watched(cfg, cache_dir, run_dir, restart=restart, watch=watch, say=echo_err)
    if not is_main_process():
        return
    click.echo(
        f"step {result['step']}: val latent L1 {result['val/latent_l1']:.6g} "
        f"(noisy {result['val/noisy_l1']:.6g}), gain {result['val/gain']:.4f} "
        f"(1.0 = no change), best L1 {result['best/latent_l1']:.6g}\nrun: {result['run_dir']}"
    )


@main.command("import-seed")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.option("--conf", type=click.Path(dir_okay=False), default="conf/train.yaml",
              show_default=True, help="Profile whose `train` section a fine-tune will use "
                                      "(and `codec` section, for the codec's identity).")
@codec_options
@click.option("--overwrite", is_flag=True, help="Replace a run already in RUN_DIR.")
@fails_cleanly(*STAGE_ERRORS)
def import_seed_command(checkpoint, run_dir, conf, codec, codec_weights, overwrite):
    """Turn a checkpoint of the seed research code (.tar with denoiser_state_dict, …) into a
    cleancodec run folder (best.pt, latest.pt) that denoise, export, evaluate and watch take
    and that `cleancodec train --run RUN_DIR` fine-tunes, continuing its step count.

    The file is read without unpickling code (weights_only); width, depth and layer scale come
    from its tensor shapes. The codec (default: DAC 16 kHz pretrained weights, as the seed
    used) is loaded once to record which latents the run is for.
    """
    from cleancodec.infer.seed_import import run_import_seed

    report = run_import_seed(checkpoint, run_dir, conf, resolve_codec_choice(codec, codec_weights),
                             overwrite)
    args = report.model_args
    click.echo(f"imported {checkpoint}: seed denoiser width {args['width']}, depth "
               f"{args['depth']}{', layer scale' if args['layer_scale'] else ''} "
               f"({report.parameters / 1e6:.2f} M parameters), step {report.step}, "
               f"discriminator {'yes' if report.disc_args else 'no'}, optimiser states "
               f"{'yes' if report.optimisers else 'no'}\nrun: {report.run_dir}\n"
               f"fine-tune: cleancodec train --conf {conf} --cache CACHE --run {report.run_dir} "
               f"{' '.join(report.train_args)} train.steps=N   (N > {report.step}: the step "
               f"count continues from {report.step})")


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
@fails_cleanly(*CONFIG_ERRORS, OSError)
def demo_data_command(conf, out_dir, deb_cache, no_apt_update, overrides):
    """Build the demo corpus: real speech and noise from Debian packages, generated noise,
    speaker-disjoint splits and a DNS-style test set. Reruns only do what is missing; exits
    non-zero when a part could not be built (the message says what to do)."""
    from cleancodec.core.config import check_overrides, load_section
    from cleancodec.datagen.demo.build import build_demo_data
    from cleancodec.datagen.demo.config import DemoDataConfig
    from cleancodec.datagen.demo.summary import summary

    check_overrides(overrides, ("demo_data",), "demo data")
    cfg = load_section(conf, "demo_data", DemoDataConfig, overrides)
    if no_apt_update:
        cfg.apt_update = "never"
    report = build_demo_data(cfg, out_dir, deb_cache)
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
@fails_cleanly(*CONFIG_ERRORS, OSError)
def demo_testset_command(conf, corpus, out):
    """Copy the first demo.testset_clips clean/noisy pairs of the demo test set into OUT."""
    from cleancodec.datagen.demo.excerpt import run_testset_excerpt

    names = run_testset_excerpt(out, corpus, conf)
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
@fails_cleanly(*STAGE_ERRORS)
def watch_command(run_dir, testset, conf, codec, codec_weights, once, poll, timeout,
                  started_after, overrides):
    """Score each new best.pt / step_<N>.pt of RUN with audio metrics (DNSMOS, PESQ, STOI,
    SI-SDR, speaker similarity) on a test set: RUN/eval/eval.jsonl, RUN/eval/scores.png and
    TensorBoard (RUN/tensorboard/eval). Follows a live run until it ends; the trainer itself
    never loads the codec."""
    from cleancodec.core.config import check_overrides
    from cleancodec.core.oserrors import named_os_errors
    from cleancodec.infer.watch import summary_lines, watch_run

    items = option_overrides("codec", {"weights": resolve_codec_choice(codec, codec_weights)})
    check_overrides(overrides, ("codec", "denoise", "evaluate"), "watch")
    with named_os_errors():
        result = watch_run(run_dir, testset, conf, [*items, *overrides], follow=not once,
                           poll_seconds=poll, timeout_seconds=timeout,
                           run_started_after=started_after)
    click.echo("\n".join(summary_lines(result)))


for _command in (denoise_command, export_command, evaluate_command, serve_command):
    main.add_command(_command)


if __name__ == "__main__":
    main()
