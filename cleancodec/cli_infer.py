"""The inference subcommands of ``cleancodec``: ``denoise`` (files and ``--stream``),
``export`` (ONNX), ``evaluate`` and ``serve`` (the browser app); each a thin wrapper over one
stage function of ``cleancodec.infer`` (registered on the group in ``cleancodec.cli``)."""
from __future__ import annotations

import signal
from pathlib import Path

import click

from cleancodec.cli_common import (
    STAGE_ERRORS,
    codec_options,
    fails_cleanly,
    option_overrides,
    resolve_codec_choice,
)
from cleancodec.core.stopping import SIGNAL_EXIT_BASE

# --- denoise, export and evaluate (infer/) --------------------------------------------


@click.command("denoise")
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
@fails_cleanly(*STAGE_ERRORS)
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

    from cleancodec.core.config import check_overrides, split_overrides
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
    check_overrides(overrides, ("codec", "denoise"), "denoise")
    summary, output = run_denoise(input_path, output_path, conf, [*items, *overrides],
                                  progress=not quiet,
                                  load=functools.partial(load_engine, engine, onnx_model))
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
    """``cleancodec denoise --stream`` (its errors: those of ``denoise_command``): everything
    but audio goes to stderr."""
    from cleancodec.core.config import check_overrides
    from cleancodec.infer.stream import DEFAULT_BLOCK_MS
    from cleancodec.infer.streamio import StreamOptions, run_stream

    opts = StreamOptions(block_ms=DEFAULT_BLOCK_MS if block_ms is None else block_ms,
                         raw_format=raw_format, rate=rate, channels=channels or 1)
    check_overrides(overrides, ("codec", "denoise"), "denoise")
    summary = run_stream(input_path, output_path, conf, items, opts, engine, onnx_model)
    click.echo("\n".join(summary.lines()), err=True)
    if summary.stopped_by in signal.Signals.__members__:
        raise SystemExit(SIGNAL_EXIT_BASE + signal.Signals[summary.stopped_by])


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True,
              help="The whole 16 kHz graph (DAC encoder → denoiser → quantizer → decoder, "
                   "dynamic length in whole 20 ms frames) for `denoise --engine onnx`; "
                   "default: the denoiser alone (raw latents, dynamic frame axis).")
@click.option("--streaming", is_flag=True,
              help="With --full: the graph as one streaming step, its layer state as inputs "
                   "and outputs (stateful `denoise --stream --engine onnx`; also denoises "
                   "files). Needs a denoiser with grn none or window.")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="--full: profile with a `codec` section (the codec the checkpoint was "
                   "trained on).")
@codec_options
@click.option("--allow-codec-mismatch", is_flag=True, default=None,
              help="--full: use a checkpoint trained on another codec's latents.")
@click.argument("overrides", nargs=-1, metavar="[codec|denoise.KEY=VALUE]...")
@fails_cleanly(*STAGE_ERRORS)
def export_command(checkpoint, output, full, streaming, conf, codec, codec_weights,
                   allow_codec_mismatch, overrides):
    """Export CHECKPOINT's denoiser (or with --full the whole enhancement graph) to ONNX.

    The file is checked with onnxruntime against torch before it is renamed into place; the
    maximum absolute difference is printed.
    """
    from cleancodec.core.config import check_overrides
    from cleancodec.infer.export import run_export

    items = [*option_overrides("codec", {"weights": resolve_codec_choice(codec, codec_weights)}),
             *option_overrides("denoise", {"allow_codec_mismatch": allow_codec_mismatch})]
    check_overrides(overrides, ("codec", "denoise"), "export")
    report = run_export(checkpoint, output, full, conf, [*items, *overrides], streaming)
    click.echo("\n".join(report.lines()))


@click.command("evaluate")
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
@click.option("--table", type=click.Choice(["all", "voicebank", "dns"]), default=None,
              help="Columns of results.md: all (default) | voicebank (PESQ, CSIG, CBAK, COVL, "
                   "STOI) | dns (DNSMOS SIG/BAK/OVRL, P.808, PESQ, STOI, SI-SDR, SpkSim).")
@click.option("--codec-alone", type=click.Path(exists=True, file_okay=False), default=None,
              help="Files decoded by the codec alone (`denoise --bypass`, same names): heard "
                   "and plotted in report.html, not scored.")
@click.option("--compare", default=None, metavar="NAME",
              help="Draw this run beside published results: dns2020-no-reverb | voicebank "
                   "(compare_NAME.png, also in report.html).")
@click.option("--same-testset", is_flag=True, default=None,
              help="--compare: the test set IS the published one (else the chart says it "
                   "is not).")
@click.option("--report-files", type=click.IntRange(min=1), default=None,
              help="report.html: above 3×N files, show the N worst, median and best "
                   "(default 50).")
@click.option("--no-report", "report", flag_value=False, default=None,
              help="Do not write report.html.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("overrides", nargs=-1, metavar="[evaluate.KEY=VALUE]...")
@fails_cleanly(ValueError, OSError)
def evaluate_command(enhanced, clean, noisy, out, conf, workers, spectrograms,
                     dnsmos_personalized, table, codec_alone, compare, same_testset, report_files,
                     report, quiet, overrides):
    """Score enhanced speech: DNSMOS, PESQ-WB, STOI, SI-SDR, speaker similarity, CSIG / CBAK /
    COVL (with LLR, WSS, segSNR).

    Files pair by relative path or by the DNS test-set `fileid_N` convention.
    """
    from cleancodec.core.config import check_overrides
    from cleancodec.infer.evaluate import run_evaluate

    items = option_overrides("evaluate", {"workers": workers, "spectrograms": spectrograms,
                                          "dnsmos_personalized": dnsmos_personalized,
                                          "table": table,
                                          "compare": compare, "same_testset": same_testset,
                                          "report_files": report_files, "report": report})
    check_overrides(overrides, ("evaluate",), "evaluate")
    result = run_evaluate(enhanced, out, clean, noisy, conf, [*items, *overrides],
                          progress=not quiet, codec_alone=codec_alone)
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
    for kind in ("compare", "report"):
        if result.paths.get(kind):
            click.echo(f"{kind}: {result.paths[kind]}")


@click.command("serve")
@click.option("--conf", type=click.Path(dir_okay=False), default=None,
              help="Profile with `codec` and `denoise` sections (e.g. conf/denoise.yaml).")
@codec_options
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint picked first. Default: the newest best.pt under runs/ trained "
                   "on the loaded codec's latents; the page lists every run's best.pt.")
@click.option("--host", default=None,
              help="Address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port (default 7860).")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Longest input accepted, in seconds (default 600).")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (codec and denoiser).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: codec.num_threads, else all cores).")
@click.argument("overrides", nargs=-1, metavar="[codec|denoise.KEY=VALUE]...")
@fails_cleanly(*STAGE_ERRORS)
def serve_command(conf, codec, codec_weights, checkpoint, host, port, max_seconds, device,
                  threads, overrides):
    """Serve a browser app to denoise speech and compare it by ear (Gradio; `pip install
    -e '.[serve]'`).

    Upload or record a file, denoise it as `cleancodec denoise` would, and compare noisy,
    denoised and codec-alone audio, spectrograms and DNSMOS; download the result; denoise the
    microphone live where the machine keeps up. HTTP API: the endpoint /denoise.
    """
    from cleancodec.core.config import check_overrides
    from cleancodec.infer.serve import ServeConfig
    from cleancodec.infer.serve_app import run_serve

    items = [*option_overrides("codec", {"weights": resolve_codec_choice(codec, codec_weights),
                                         "device": device, "num_threads": threads}),
             *option_overrides("denoise", {"checkpoint": checkpoint})]
    check_overrides(overrides, ("codec", "denoise"), "serve")
    given = {"host": host, "port": port, "max_seconds": max_seconds}
    serve = ServeConfig(**{k: v for k, v in given.items() if v is not None})
    run_serve(conf, [*items, *overrides], serve, announce=click.echo)
