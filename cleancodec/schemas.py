"""Where each profile section's schema lives: one typed dataclass per section, its defaults the
only place a default is written. Imported lazily, so that loading the ``train`` schema never
imports the codec (the trainer reads latents only)."""
from __future__ import annotations

import importlib

from cleancodec.core.config import SECTIONS

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


def schema(section: str) -> type:
    """The dataclass schema of ``section`` (one of :data:`cleancodec.core.config.SECTIONS`)."""
    try:
        module, name = SCHEMAS[section].split(":")
    except KeyError:
        raise KeyError(f"unknown section {section!r}; known: {list(SECTIONS)}") from None
    return getattr(importlib.import_module(module), name)
