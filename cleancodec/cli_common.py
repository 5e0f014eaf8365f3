"""The parts every ``cleancodec`` subcommand shares: which errors end a command with a clean
one-line message (:func:`fails_cleanly`), the ``--codec`` / ``--codec-weights`` options, and
command-line options as ``section.key=value`` overrides.

Errors: each command names, once, in :func:`fails_cleanly`, the exceptions of its stage that
are the user's to fix (bad input, configuration, files); they end the command with a one-line
``Error: ...`` and exit status 1. Any other exception is a bug and keeps its traceback. A stop
signal ends a stage with its message and the exit status ``128 + signal``."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from cleancodec.core.stopping import StopRequested

ErrorSpec = type[BaseException] | str  # a class, or "module:Class" (resolved when one is raised)
# What most stages report as a one-line message: bad values, configuration and codec problems
# (every error class of the stages derives from ValueError or RuntimeError) and files.
STAGE_ERRORS: tuple[ErrorSpec, ...] = (ValueError, RuntimeError, OSError)
# Training reports its own errors and OS errors only: any other RuntimeError (CUDA, torch)
# keeps its traceback. Named as "module:Class" so that the CLI imports no torch to list them.
TRAIN_ERRORS: tuple[ErrorSpec, ...] = (
    "cleancodec.core.config:ConfigError", "cleancodec.pipeline.manifest:ManifestError",
    "cleancodec.trainer.checkpoint:CheckpointError",
    "cleancodec.trainer.cache_split:CacheDataError",
    "cleancodec.core.dirlock:DirectoryLockedError", FloatingPointError, OSError)
CONFIG_ERRORS: tuple[ErrorSpec, ...] = ("cleancodec.core.config:ConfigError",)


def _error_types(errors: tuple[ErrorSpec, ...]) -> tuple[type[BaseException], ...]:
    """The classes named by ``errors``; a ``"module:Class"`` whose module was never imported is
    left out (nothing raised can be an instance of it)."""
    types = []
    for spec in errors:
        if isinstance(spec, str):
            module, _, name = spec.partition(":")
            loaded = sys.modules.get(module)
            if loaded is not None:
                types.append(getattr(loaded, name))
        else:
            types.append(spec)
    return tuple(types)


def echo_err(text: str) -> None:
    """Print ``text`` on stderr (stdout carries results only)."""
    click.echo(text, err=True)


def fails_cleanly(*errors: ErrorSpec, stop_message_on_every_rank: bool = False) -> Callable:
    """Decorator of a command: the exceptions ``errors`` end it with ``Error: <message>`` and
    exit status 1; :class:`StopRequested` ends it with its message on stderr (on the main rank
    only, unless ``stop_message_on_every_rank``) and exit status ``128 + signal``."""
    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except StopRequested as exc:
                from cleancodec.core.topology import is_main_process  # torch: loaded lazily

                if stop_message_on_every_rank or is_main_process():
                    echo_err(str(exc))
                raise SystemExit(exc.exit_code) from exc
            except Exception as exc:
                if isinstance(exc, _error_types(errors)):
                    raise click.ClickException(str(exc)) from exc
                raise
        return run
    return decorate


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
