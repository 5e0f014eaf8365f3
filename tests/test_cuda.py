"""CUDA: bf16 training steps, GPU vs CPU latents and denoising, torchrun with NCCL.

Every test here is marked ``cuda`` and skipped, with the reason, where torch sees no GPU (CI has
none). Run them on a GPU machine with ``pytest -m cuda``. Tolerances are stated beside each
check: cuDNN convolutions run in TF32 by default, so GPU float32 results agree with the CPU to
about 1e-3 relative, not to float32 rounding.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch"),
]

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "conf" / "tiny.yaml"
SEED = 0
LATENT_DIM = 64      # the tiny codec's latent dim
FRAMES = 50          # 1 s windows of the tiny cache
BATCH = 8
# agreement goals (signal-to-difference ratio, dB, and relative error)
TF32_SNR_DB = 40.0        # float32 on GPU (TF32 convolutions) vs CPU
BF16_SNR_DB = 20.0        # bf16 autocast vs float32
BF16_LOSS_RTOL = 5e-2     # bf16 step losses vs the fp32 step on the same batch
BF16_GRAD_COSINE = 0.98   # direction of the bf16 gradients vs fp32


def snr_db(ref: np.ndarray | torch.Tensor, test: np.ndarray | torch.Tensor) -> float:
    """``infer.denoise.snr_db`` of arrays or tensors on any device."""
    from cleancodec.infer.denoise import snr_db as snr

    def host(x: np.ndarray | torch.Tensor) -> np.ndarray:
        return torch.as_tensor(x).detach().to("cpu", torch.float64).numpy()

    return snr(host(ref), host(test))


def _models(device: torch.device):
    from cleancodec.trainer.config import TrainConfig
    from cleancodec.trainer.models import Denoiser, Discriminator

    cfg = TrainConfig()
    torch.manual_seed(SEED)
    g = Denoiser(LATENT_DIM, width=64, depth=2).to(device)
    d = Discriminator(LATENT_DIM, channels=32, dilations=[1, 2, 4], groups=4).to(device)
    with torch.no_grad():  # a trained-looking G: non-zero head, so fake != noisy
        for p in g.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return g, d, cfg


def _step(g, d, cfg, noisy, clean, bf16: bool):
    from cleancodec.trainer.losses import discriminator_losses, generator_losses

    ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16
           else torch.autocast("cuda", enabled=False))
    g.zero_grad(set_to_none=True)
    d.zero_grad(set_to_none=True)
    with ctx:
        fake = g(noisy)
        real_n, fake_n = g.normalize(clean), g.normalize(fake)
        d_losses = discriminator_losses(d, real_n, fake_n, cfg.loss)
    d_losses["d/loss"].backward()
    d_grads = torch.cat([p.grad.flatten() for p in d.parameters() if p.grad is not None])
    d.requires_grad_(False)
    with ctx:
        g_losses = generator_losses(d, real_n, fake_n, cfg.loss)
    g_losses["g/loss"].backward()
    d.requires_grad_(True)
    g_grads = torch.cat([p.grad.flatten() for p in g.parameters() if p.grad is not None])
    losses = {k: float(v) for k, v in {**d_losses, **g_losses}.items()}
    return losses, d_grads.float(), g_grads.float()


def test_bf16_training_step_is_finite_and_close_to_fp32():
    """Spectral norm, R1 (a gradient of a gradient) and feature matching under bf16 autocast."""
    dev = torch.device("cuda")
    g, d, cfg = _models(dev)
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    clean = torch.randn(BATCH, LATENT_DIM, FRAMES, generator=gen).to(dev)
    noisy = clean + 0.5 * torch.randn(BATCH, LATENT_DIM, FRAMES, generator=gen).to(dev)
    state_g = {k: v.clone() for k, v in g.state_dict().items()}
    state_d = {k: v.clone() for k, v in d.state_dict().items()}
    ref, ref_dg, ref_gg = _step(g, d, cfg, noisy, clean, bf16=False)
    g.load_state_dict(state_g)
    d.load_state_dict(state_d)  # spectral norm's power-iteration vectors too
    got, dg, gg = _step(g, d, cfg, noisy, clean, bf16=True)
    for key, value in got.items():
        assert np.isfinite(value), key
        assert value == pytest.approx(ref[key], rel=BF16_LOSS_RTOL, abs=1e-3), key
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(dg, ref_dg, dim=0)) > BF16_GRAD_COSINE
    assert float(cos(gg, ref_gg, dim=0)) > BF16_GRAD_COSINE


def _tiny_codec(device: str, bf16: bool = False):
    from cleancodec.core.codec import CodecConfig, load_codec

    return load_codec(CodecConfig(weights="random", random_arch="tiny", random_seed=SEED,
                                  device=device, bf16=bf16))


def test_gpu_latents_close_to_cpu_latents():
    rng = np.random.default_rng(SEED)
    wave = (0.1 * rng.standard_normal((2, 16000))).astype(np.float32)
    cpu = _tiny_codec("cpu").encode(wave).cpu()
    gpu = _tiny_codec("cuda").encode(wave).cpu()
    assert gpu.shape == cpu.shape
    assert snr_db(cpu, gpu) >= TF32_SNR_DB
    bf16 = _tiny_codec("cuda", bf16=True).encode(wave).cpu()
    assert torch.isfinite(bf16).all() and snr_db(cpu, bf16) >= BF16_SNR_DB


def test_gpu_decode_close_to_cpu_decode():
    rng = np.random.default_rng(SEED + 1)
    wave = (0.1 * rng.standard_normal((1, 16000))).astype(np.float32)
    cpu_codec, gpu_codec = _tiny_codec("cpu"), _tiny_codec("cuda")
    z = cpu_codec.encode(wave)
    cpu = cpu_codec.decode(cpu_codec.quantize(z), wave.shape[-1]).cpu()
    gpu = gpu_codec.decode(gpu_codec.quantize(z.cuda()), wave.shape[-1]).cpu()
    assert snr_db(cpu, gpu) >= TF32_SNR_DB - 10  # residual VQ may flip a code near a boundary


def test_gpu_denoise_equals_cpu_denoise(tmp_path):
    """The whole file path (read → encode → denoise → quantise → decode → write) on both devices."""
    import soundfile as sf
    from click.testing import CliRunner

    from cleancodec.cli import main

    rng = np.random.default_rng(SEED + 2)
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", (0.1 * rng.standard_normal(3 * 16000)).astype(np.float32), 16000)
    outs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"out_{device}"
        result = CliRunner().invoke(main, ["denoise", str(src), str(out), "--conf", str(TINY),
                                           "--bypass", "--device", device, "--quiet"])
        assert result.exit_code == 0, result.output
        outs[device], _ = sf.read(out / "a.wav", dtype="float32")
    assert snr_db(outs["cpu"], outs["cuda"]) >= TF32_SNR_DB - 10


def _torchrun(nproc: int, cache: Path, run: Path, steps: int) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", "--nproc_per_node", str(nproc), "-m", "cleancodec", "train",
           "--conf", str(TINY), "--cache", str(cache), "--run-dir", str(run), "--quiet",
           f"train.steps={steps}", "train.device=cuda", "train.bf16=true",
           "train.data.num_workers=1", "train.checkpoint_every=2", "train.val_every=2",
           "train.log_every=1", "train.milestones=[]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


def test_torchrun_nccl_one_process_steps_checkpoints_and_resumes(tiny_latent_cache, tmp_path):
    cache, run = tiny_latent_cache("zarr"), tmp_path / "run"
    first = _torchrun(1, cache, run, steps=4)
    assert first.returncode == 0, first.stdout + first.stderr
    ckpt = torch.load(run / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 4
    again = _torchrun(1, cache, run, steps=6)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed" in again.stdout + again.stderr
    ckpt = torch.load(run / "latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["denoiser"].values()
               if torch.is_floating_point(v))


def test_torchrun_nccl_two_processes_on_one_gpu(tiny_latent_cache, tmp_path):
    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs present: the multi-GPU path is covered by a real launch")
    result = _torchrun(2, tiny_latent_cache("zarr"), tmp_path / "run2", steps=2)
    text = result.stdout + result.stderr
    if result.returncode != 0 and ("Duplicate GPU" in text or "invalid usage" in text.lower()):
        pytest.skip("NCCL refuses two ranks on one GPU (" + text.strip().splitlines()[-1] + ")")
    assert result.returncode == 0, text
    assert torch.load(tmp_path / "run2" / "latest.pt", map_location="cpu",
                      weights_only=True)["step"] == 2


def test_prefetched_and_gpu_resident_batches_equal_streamed_ones(tiny_latent_cache):
    """The device prefetcher (pinned memory, side-stream copies) and a GPU-resident split give,
    on the GPU, exactly the batches the CPU reader gives."""
    from cleancodec.pipeline.manifest import load_manifest
    from cleancodec.trainer.config import DataConfig
    from cleancodec.trainer.data import open_split, train_batches, train_sampler
    from cleancodec.trainer.feed import DevicePrefetcher, ResidentSplit, resident_batches

    cache = tiny_latent_cache("zarr", 32, 8, noisy_per_clean=2)
    src = open_split(cache, load_manifest(cache), "train")
    cfg = DataConfig(batch_size=BATCH, num_workers=0, resident="off")
    dev = torch.device("cuda")
    ref = [{k: v.clone() for k, v in next(it).items()}
           for it in [train_batches(src, cfg, SEED)] for _ in range(5)]
    pre = DevicePrefetcher(train_batches(src, cfg, SEED, pin_memory=True), dev)
    split = ResidentSplit(src, dev)
    res = resident_batches(split, iter(train_sampler(src, cfg, SEED)))
    for r in ref:
        a, b = next(pre), next(res)
        for name in ("noisy", "clean"):
            assert a[name].is_cuda and b[name].is_cuda
            assert torch.equal(a[name].cpu(), r[name]) and torch.equal(b[name].cpu(), r[name])
