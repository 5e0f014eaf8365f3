"""Where each profile section's schema lives: one typed dataclass per section, its defaults the
only place a default is written. Imported lazily, so that loading the ``train`` schema never
imports the codec (the trainer reads latents only).

:func:`resolve` is what a stage runs with: most sections are their schema filled from the profile
and the overrides; a section with more to resolve (``train``: the model preset) names its own
resolving function in :data:`RESOLVERS`, and the stage calls that same function, so
``cleancodec config`` prints exactly what the stage builds."""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cleancodec.core.config import SECTIONS, load_section

#: section → "module:Class" of its schema
SCHEMAS = {
    "codec": "cleancodec.core.codec:CodecConfig",
    "cache": "cleancodec.pipeline.build:CacheConfig",
    "train": "cleancodec.trainer.config:TrainConfig",
    "denoise": "cleancodec.infer.denoise:DenoiseConfig",
    "evaluate": "cleancodec.infer.evaluate:EvaluateConfig",
    "demo": "cleancodec.datagen.demo.config:DemoConfig",
    "demo_data": "cleancodec.datagen.demo.config:DemoDataConfig",
}
assert tuple(SCHEMAS) == SECTIONS, "every section needs a schema"

#: section → "module:function" ``(path, preset, overrides) -> config`` for sections that resolve
#: more than their schema's fields
RESOLVERS = {
    "train": "cleancodec.trainer.config:load_train_config",
}


def _attr(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def schema(section: str) -> type:
    """The dataclass schema of ``section`` (one of :data:`cleancodec.core.config.SECTIONS`)."""
    try:
        spec = SCHEMAS[section]
    except KeyError:
        raise KeyError(f"unknown section {section!r}; known: {list(SECTIONS)}") from None
    return _attr(spec)


def resolve(path: str | Path | None, section: str, overrides: Sequence[str] = ()) -> Any:
    """The ``section`` config a stage runs with, from profile ``path`` and ``overrides``.

    Raises
    ------
    ConfigError
        For unknown keys, wrong types and values the schema refuses, naming the key.
    """
    if section in RESOLVERS:
        return _attr(RESOLVERS[section])(path, None, overrides)
    return load_section(path, section, schema(section), overrides)
