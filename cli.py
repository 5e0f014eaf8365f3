"""The ``cleancodec`` command: one subcommand per stage, each a thin wrapper over one typed
stage function (``pipeline.build.build_cache``, ``trainer.loop.fit``, ``infer.run.denoise_path``,
``infer.evaluate.evaluate_dirs``)."""
from __future__ import annotations

import click


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


def resolve_codec_choice(codec: str | None, codec_weights: str | None) -> str | None:
    """Merge ``--codec`` and ``--codec-weights`` into one ``codec.weights`` override (or None)."""
    if codec and codec_weights and codec != codec_weights:
        raise click.UsageError("give either --codec or --codec-weights, not both")
    return codec_weights or codec


if __name__ == "__main__":
    main()
