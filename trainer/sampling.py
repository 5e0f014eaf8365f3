"""The seeded order of training pairs for index-based readers: a block shuffle that reads
consecutive windows together, dealt to ranks batch by batch, resumable at any step (the batch at
step ``s`` is the same whether the run got there in one go or resumed)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from cleancodec.pipeline.manifest import ManifestError
from cleancodec.trainer.cache_split import TAG_EPOCH, seeded_rng


def block_shuffle(n: int, rng: np.random.Generator, block: int, buffer: int) -> np.ndarray:
    """A seeded order of ``range(n)`` read in runs: the indices are cut into blocks of ``block``
    consecutive ones (consecutive windows of one shard), the blocks are permuted, then the
    sequence is mixed within each run of ``buffer`` positions. ``block <= 1``: a plain
    permutation."""
    if block <= 1:
        return rng.permutation(n)
    starts = rng.permutation(np.arange(0, n, block))
    seq = (starts[:, None] + np.arange(block)[None, :]).reshape(-1)
    seq = seq[seq < n]
    if buffer > 1:
        groups = np.arange(n) // buffer
        seq = seq[np.lexsort((rng.random(n), groups))]
    return seq


class EpochBatchSampler(Sampler[list[int]]):
    """Endless seeded batches of dataset indices, starting at any batch.

    Epoch ``e`` is an order of all ``n`` pairs drawn from ``(seed, e)`` (:func:`block_shuffle`
    with ``block`` and ``buffer``), dealt to ranks round-robin (each rank gets ``n // world``) and
    cut into ``batch_size`` batches (a last partial batch is dropped). Batch ``k`` of this rank's
    stream is the same whatever ``start``.

    ``group`` > 1 keeps runs of ``group`` consecutive indices together (the K noisy variants of
    one clean window): the order is drawn over the ``n // group`` groups (``block`` and
    ``buffer`` are divided by ``group``, so runs stay as long in pairs), groups are dealt to
    ranks, and each group's indices follow one another, so a batch holds whole groups (but where
    a group straddles two batches).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 start: int = 0, block: int = 1, buffer: int = 0, group: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.start = rank, world, start
        self.group = max(1, int(group))
        self.block, self.buffer = block, buffer
        self.units = n // self.group
        self.batches_per_epoch = (self.units // world) * self.group // batch_size
        if self.batches_per_epoch < 1:
            raise ManifestError(
                f"the train split has {n} windows: fewer than batch_size {batch_size} x "
                f"{world} rank(s); lower train.data.batch_size or build a larger cache"
            )

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch`` (length ``batches_per_epoch * batch_size``)."""
        g = self.group
        perm = block_shuffle(self.units, seeded_rng(self.seed, TAG_EPOCH, epoch),
                             max(1, self.block // g), max(1, self.buffer // g))
        mine = perm[self.rank::self.world][: self.units // self.world]
        if g > 1:
            mine = (mine[:, None] * g + np.arange(g)[None, :]).reshape(-1)
        return mine[: self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        step, cached = self.start, (None, None)
        while True:
            epoch, b = divmod(step, self.batches_per_epoch)
            if cached[0] != epoch:
                cached = (epoch, self.epoch_indices(epoch))
            yield cached[1][b * self.batch_size:(b + 1) * self.batch_size].tolist()
            step += 1

    def __len__(self) -> int:  # one epoch; the sampler itself is endless
        return self.batches_per_epoch
