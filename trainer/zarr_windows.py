"""Map-style reads of a zarr latent split through zarr's own codec pipeline (any compressor, a
local or a remote store): the generic path of :mod:`cleancodec.trainer.data`, for caches that
:mod:`cleancodec.trainer.mapped` cannot read as byte ranges. Every row read is checked (zarr's
crc32c where the cache has it, finite values)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cleancodec.core import remote
from cleancodec.pipeline.shards import META_FIELDS
from cleancodec.trainer.cache_split import (
    FIELDS,
    Batch,
    CacheDataError,
    SplitSource,
    check_finite,
    skip_corrupt,
    stack_windows,
)


class ZarrWindows(Dataset):
    """Map-style access to the training pairs of a zarr split through zarr's codec pipeline (any
    compressor, local or remote store): the generic path, for caches :mod:`.mapped` cannot map.

    ``dataset[p]`` is pair ``p`` (noisy variant ``p % K`` of window ``p // K``) as
    ``{"noisy", "clean"}`` ``Tensor[D x F]``; ``dataset.__getitems__(pairs)`` (used by the
    DataLoader for a whole batch) stacks them to ``Tensor[B x D x F]``; :meth:`read_meta` gives
    a pair's stored metadata. The store is opened lazily in each process (DataLoader workers
    included); the metadata arrays only when first asked for.
    """

    def __init__(self, path: Path | str, rows: np.ndarray, noisy_per_clean: int = 1):
        self.path = path
        self.rows = np.asarray(rows, dtype=np.int64)
        self.K = int(noisy_per_clean)
        self._arrays: tuple[int, dict[str, Any]] | None = None
        self._meta_arrays: tuple[int, dict[str, Any]] | None = None

    @classmethod
    def of(cls, source: SplitSource) -> ZarrWindows:
        return cls(source.zarr_path, source.rows, source.noisy_per_clean)

    def __len__(self) -> int:
        return len(self.rows) * self.K

    def _group(self) -> Any:
        import zarr

        return zarr.open_group(remote.zarr_store(self.path), mode="r")

    def _open(self) -> dict[str, Any]:
        pid = os.getpid()
        if self._arrays is None or self._arrays[0] != pid:
            try:
                group = self._group()
                self._arrays = (pid, {name: group[name] for name in FIELDS})
            except Exception as exc:  # zarr raises many types for a broken store
                raise CacheDataError(f"{self.path}: cannot open latent arrays ({exc})") from exc
        return self._arrays[1]

    def _rows(self, p: int) -> dict[str, int]:
        i, k = divmod(int(p), self.K)
        row = int(self.rows[i])
        return {"clean": row, "noisy": row * self.K + k}

    def _read(self, p: int) -> dict[str, np.ndarray]:
        return {name: self._read_row(name, row) for name, row in self._rows(p).items()}

    def _read_row(self, name: str, row: int, out: np.ndarray | None = None) -> np.ndarray:
        """Row ``row`` of array ``name`` (into ``out`` when given), checked: a failing zarr
        crc32c (caches built since it) or non-finite values raise CacheDataError "corrupt"."""
        try:
            value = self._open()[name][row]
        except Exception as exc:  # zarr raises many types for a broken chunk
            kind = ("is corrupt: its bytes fail their crc32c checksum; rebuild that shard"
                    if "checksum" in str(exc).lower() else f"cannot be read ({exc})")
            raise CacheDataError(f"{self.path}: {name} row {row} {kind}") from exc
        if out is None:
            out = np.asarray(value)
        else:
            out[...] = value
        check_finite({name: out}, f"{self.path}: {name} row {row}")
        return out

    def read_clean(self, i: int, out: np.ndarray) -> None:
        """Copy clean window ``i`` into ``out`` ``[D x F]`` (checked)."""
        self._read_row("clean", int(self.rows[i]), out)

    def read_noisy(self, i: int, k: int, out: np.ndarray) -> None:
        """Copy noisy variant ``k`` of window ``i`` into ``out`` ``[D x F]`` (checked)."""
        self._read_row("noisy", int(self.rows[i]) * self.K + k, out)

    def _open_meta(self) -> dict[str, Any]:
        pid = os.getpid()
        if self._meta_arrays is None or self._meta_arrays[0] != pid:
            try:
                group = self._group()
                present = set(group.array_keys())
                arrays = {name: group[name] for name in META_FIELDS if name in present}
            except Exception as exc:  # zarr raises many types for a broken store
                raise CacheDataError(
                    f"{self.path}: cannot open metadata arrays ({exc})") from exc
            self._meta_arrays = (pid, arrays)
        return self._meta_arrays[1]

    def read_meta(self, p: int) -> dict[str, Any]:
        """Stored metadata of pair ``p`` (its noisy variant): the
        :data:`~cleancodec.pipeline.shards.META_FIELDS` the store holds, as Python scalars
        (source fields are indices into the manifest's ``sources``; ``rir_source`` -1 means
        dry)."""
        row = self._rows(p)["noisy"]
        arrays = self._open_meta()
        try:
            return {name: np.asarray(array[row]).item() for name, array in arrays.items()}
        except Exception as exc:
            raise CacheDataError(f"{self.path}: cannot read metadata of row {row} ({exc})") from exc

    def __getitem__(self, p: int) -> Batch:
        return {k: torch.from_numpy(v) for k, v in self._read(p).items()}

    def __getitems__(self, indices: list[int]) -> Batch:
        """The pairs ``indices`` stacked (see :func:`stack_windows`): a corrupt window is left
        out with a warning and counted under ``"corrupt"``."""
        return stack_windows([skip_corrupt(self._read, i) for i in indices])
