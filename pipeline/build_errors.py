"""The errors a cache build raises (the CLI turns each into a one-line message)."""
from __future__ import annotations


class BuildError(RuntimeError):
    """The cache could not be built."""


class CacheMismatchError(BuildError):
    """The output folder holds a cache made with another codec, config or corpus."""


class NoUsableInputError(BuildError):
    """Every input file was rejected (or none was found)."""


__all__ = ["BuildError", "CacheMismatchError", "NoUsableInputError"]
