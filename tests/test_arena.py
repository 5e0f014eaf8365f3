"""infer.arena: a module's weights moved onto huge pages keep their objects, values, layout
and versions; the module computes the same; moved tensors are not moved again."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from cleancodec.core.codec import load_codec
from cleancodec.infer import arena
from cleancodec.infer.denoise import Enhancer, enhance_whole, snr_db
from cleancodec.infer.stateful import StatefulStream
from cleancodec.infer.stream import stream_signal
from cleancodec.infer.stream_layers import StreamConvTranspose1d
from tests.helpers import TINY_CODEC, local_denoiser, speechlike

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")

needs_huge_pages = pytest.mark.skipif(not arena.huge_pages_available(),
                                      reason="no madvise(MADV_HUGEPAGE) on this platform")


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.up = nn.ConvTranspose1d(8, 4, 8, stride=4, padding=2)
        self.register_buffer("table_t", torch.randn(16, 4).t())  # a transposed view
        self.register_buffer("steps", torch.tensor([3, 1], dtype=torch.int64))

    def forward(self, x):
        return self.up(self.conv(x)).transpose(1, 2) @ self.table_t + self.steps.sum()


@pytest.fixture(scope="module")
def codec():
    return load_codec(TINY_CODEC)


def _vma_flags(address: int) -> dict[str, str]:
    """The /proc/self/smaps entry of the mapping that holds ``address``."""
    entry: dict[str, str] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            entry = {} if lo <= address < hi else None
        elif entry is not None:
            key, _, value = line.partition(":")
            entry[key] = value.strip()
            if key == "VmFlags":
                return entry
    raise AssertionError(f"no mapping holds {address:#x}")


@needs_huge_pages
def test_moved_tensors_keep_object_values_layout_and_version():
    net = _Net()
    x = torch.randn(2, 4, 9)
    before = net(x)
    tensors = {name: t for name, t in (*net.named_parameters(), *net.named_buffers())}
    saved = {name: (t.clone(), t.stride(), t._version, t.data_ptr()) for name, t in tensors.items()}
    moved = arena.move_to_huge_pages(net)
    assert moved >= sum(t.numel() * t.element_size() for t in tensors.values())
    storages = set()
    for name, t in (*net.named_parameters(), *net.named_buffers()):
        values, stride, version, pointer = saved[name]
        assert t is tensors[name], name
        assert torch.equal(t, values) and t.stride() == stride and t._version == version, name
        assert t.data_ptr() != pointer and t.data_ptr() % arena.ALIGN == 0, name
        storages.add(t.untyped_storage().data_ptr())
    assert len(storages) == 1  # one block
    assert torch.equal(net(x), before)
    assert net.conv.weight.requires_grad
    assert arena.move_to_huge_pages(net) == 0  # already there


@needs_huge_pages
def test_saving_a_moved_module_writes_its_own_weights_only():
    """torch.save writes a view's whole storage: the block holds exactly the moved tensors."""
    def saved_bytes(module):
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        return buffer.getbuffer().nbytes

    net = nn.Linear(256, 256)
    before = saved_bytes(net)
    arena.move_to_huge_pages(net)
    assert saved_bytes(net) <= before + arena.ALIGN


@needs_huge_pages
@pytest.mark.skipif(not THP_SETTING.exists(), reason="not Linux: no transparent huge pages")
def test_the_block_is_advised_huge_pages():
    """The kernel marks the block's mapping for huge pages (``hg``) and reports it eligible
    unless transparent huge pages are switched off."""
    net = nn.Linear(1024, 1024)
    arena.move_to_huge_pages(net)
    entry = _vma_flags(net.weight.data_ptr())
    assert "hg" in entry["VmFlags"].split()
    if "THPeligible" in entry:
        assert entry["THPeligible"] == ("0" if "[never]" in THP_SETTING.read_text() else "1")
    assert net.weight.data_ptr() % arena.HUGE_PAGE == 0  # the first tensor starts a page


def test_nothing_moves_where_huge_pages_are_not_available(monkeypatch):
    monkeypatch.setattr(arena, "huge_pages_available", lambda: False)
    net = nn.Linear(8, 8)
    pointer = net.weight.data_ptr()
    assert arena.move_to_huge_pages(net) == 0 and net.weight.data_ptr() == pointer


@needs_huge_pages
def test_the_rearranged_transposed_weight_is_shared_after_moving():
    """A stream built after the weights moved shares the moved copy, and a weight changed in
    place still gives a new one."""
    conv = nn.ConvTranspose1d(3, 2, 8, stride=4, padding=2)
    first = StreamConvTranspose1d(conv)
    arena.move_to_huge_pages(first)
    second = StreamConvTranspose1d(conv)
    assert second.polyphase is first.polyphase
    with torch.no_grad():
        conv.weight.mul_(2.0)
    assert StreamConvTranspose1d(conv).polyphase is not first.polyphase


@needs_huge_pages
def test_an_engine_moves_its_weights_and_a_stream_its_own_then_both_match_offline(codec):
    """An enhancer moves the codec's and the denoiser's weights when it is made (before any
    forward), its stateful stream the graph's rearranged ones when the graph is built."""
    enh = Enhancer(codec, local_denoiser(codec, "window", 3))
    blocks = {t.untyped_storage().data_ptr()
              for t in (codec.model.decoder.model[0].weight, enh.denoiser.head.weight)}
    assert len(blocks) == 2 and blocks <= arena._BLOCKS  # one block per module
    stream = StatefulStream.for_engine(enh, block_frames=3)
    rearranged = [m.polyphase for m in stream.chain.graph.modules()
                  if isinstance(m, StreamConvTranspose1d)]
    assert rearranged and all(t.untyped_storage().data_ptr() in arena._BLOCKS
                              for t in rearranged)
    x = speechlike(2.0, 21)
    assert snr_db(enhance_whole(enh, x), stream_signal(stream, x, 1000)) >= 100.0
