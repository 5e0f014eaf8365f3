"""``fit()``: the GAN training loop on cached latents.

Per step: G denoises the noisy batch once; D steps first on real (clean) vs the detached fake
(hinge + R1), then G steps through the updated D (adversarial + feature matching + latent L1).
Separate AdamW optimisers, linear learning-rate warm-up, gradient-norm clipping, bf16 autocast
on CUDA, DistributedDataParallel under ``torchrun``.

A run directory holds ``latest.pt`` / ``best.pt`` / ``step_<N>.pt``, ``metrics.jsonl``,
``tensorboard/``, ``config.json`` and, at the end, ``summary.json`` (names and the metrics log:
:mod:`.rundir`; the weights' average: :mod:`.ema`). Calling :func:`fit` again on the same run
directory resumes from ``latest.pt`` (``restart=True`` moves the old run aside into
``restarted-<time>/`` and starts over). The trainer never imports the codec: dimensions come
from the cache manifest.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from cleancodec.core import remote
from cleancodec.core.atomic import write_json_atomic
from cleancodec.core.config import to_dict
from cleancodec.core.dirlock import DirectoryLock
from cleancodec.core.oserrors import named_os_errors
from cleancodec.core.stopping import GracefulStop
from cleancodec.core.topology import (
    Topology,
    all_reduce_sum,
    barrier,
    bf16_autocast,
    process_group,
    wrap,
)
from cleancodec.pipeline.manifest import latent_shape, load_manifest
from cleancodec.trainer import checkpoint as ckpt_io
from cleancodec.trainer.config import TrainConfig, config_for_resume, with_added_keys
from cleancodec.trainer.data import (
    CORRUPT_KEY,
    TRAIN,
    VAL,
    Batch,
    CacheDataError,
    SplitSource,
    latent_stats,
    open_split,
    val_batches,
)
from cleancodec.trainer.ema import ema_copy, update_ema
from cleancodec.trainer.feed import DevicePrefetcher, training_feed
from cleancodec.trainer.losses import discriminator_losses, generator_losses
from cleancodec.trainer.models import build_denoiser, build_discriminator, count_parameters
from cleancodec.trainer.rundir import (
    BEST_INFO_FILE,
    CONFIG_FILE,
    SUMMARY_FILE,
    RunLogger,
    move_previous_run,
)

log = logging.getLogger(__name__)

MODEL_SECTIONS = ("denoiser", "discriminator")
SKIPPED_KEY = "skipped"  # in train_step's output when the step changed no weights


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up multiplier for the update made at ``step`` (0-based): ``(step+1)/warmup``."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


class Trainer:
    """One training run: models, optimisers, data streams, logging and checkpoints.

    Build it with :func:`fit` (or directly, for tests that inspect the models), then call
    :meth:`prepare` and :meth:`train`.
    """

    def __init__(self, cfg: TrainConfig, cache_dir: str | Path, run_dir: str | Path, env: Topology):
        self.cfg, self.env = cfg, env
        self.cache_dir = cache_dir if remote.is_url(cache_dir) else Path(cache_dir)
        self.run_dir = Path(run_dir)
        self.manifest = load_manifest(self.cache_dir)
        if not self.manifest.get("complete"):
            log.warning("%s: cache build not complete; training on its finished shards only",
                        self.cache_dir)
        self.train_src: SplitSource = open_split(self.cache_dir, self.manifest, TRAIN)
        self.val_src: SplitSource = open_split(self.cache_dir, self.manifest, VAL)
        latent_dim, _ = latent_shape(self.manifest)
        torch.manual_seed(cfg.seed)
        self.denoiser = build_denoiser({"latent_dim": latent_dim, **to_dict(cfg.denoiser)})
        self.denoiser.to(env.device)
        self.denoiser.activation_checkpointing = cfg.activation_checkpointing
        self.discriminator = build_discriminator(
            {"latent_dim": latent_dim, **to_dict(cfg.discriminator)}).to(env.device)
        betas = (float(cfg.optim.betas[0]), float(cfg.optim.betas[1]))
        self.opt_g = torch.optim.AdamW(self.denoiser.parameters(), lr=cfg.optim.lr_g, betas=betas,
                                       weight_decay=cfg.optim.weight_decay)
        self.opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=cfg.optim.lr_d,
                                       betas=betas, weight_decay=cfg.optim.weight_decay)
        self.g: torch.nn.Module = self.denoiser
        self.d: torch.nn.Module = self.discriminator
        self.step = 0
        self.origin: dict[str, Any] = {}
        self.val: dict[str, float] = {}
        self.best_val = math.inf
        self.digest = ckpt_io.manifest_digest(self.manifest)
        self.logger: RunLogger | None = None
        self._batches: DevicePrefetcher | None = None
        self._wait_mark = (0.0, time.perf_counter())  # data wait seconds, clock at last log
        self._postfix: dict[str, str] = {}
        self.skipped_in_a_row = 0
        self.skipped_total = 0
        self.windows_read = 0
        self.windows_corrupt = 0

    # --- setup -------------------------------------------------------------------------------
    def prepare(self, restart: bool = False) -> None:
        """Resume from ``latest.pt`` (or start fresh), wrap for DDP, open data and logs."""
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt_io.remove_stale_temps(self.run_dir)
            if restart:
                move_previous_run(self.run_dir)
        barrier(self.env)
        latest = self.run_dir / ckpt_io.LATEST
        resumed = None
        if latest.is_file():
            resumed = ckpt_io.load_checkpoint(latest, self.env.device)
            self._resume(resumed, latest)
        else:
            mean, std = latent_stats(self.train_src, self.cfg.data.stats_windows, self.cfg.seed)
            self.denoiser.set_latent_stats(mean, std)
        self._init_ema(resumed)
        self.g = wrap(self.denoiser, self.env)
        self.d = wrap(self.discriminator, self.env)
        if self.env.is_main:
            write_json_atomic(self.run_dir / CONFIG_FILE, {
                "config": to_dict(self.cfg), "cache_dir": str(self.cache_dir),
                "codec_identity": self.manifest["codec"]["identity"],
                "cache_manifest_digest": self.digest, "world_size": self.env.world_size,
                "denoiser_parameters": count_parameters(self.denoiser),
                "discriminator_parameters": count_parameters(self.discriminator),
            })
        self.logger = RunLogger(self.run_dir, self.step, self.env.is_main)
        self._batches = training_feed(self.train_src, self.cfg.data, self.cfg.seed, self.env,
                                      self.step)

    def _resume(self, ckpt: dict[str, Any], path: Path) -> None:
        identity = self.manifest["codec"]["identity"]
        if ckpt.get("codec_identity") != identity:
            raise ckpt_io.CheckpointError(
                f"{path}: trained on latents of another codec ({ckpt.get('codec_identity')}) than "
                f"this cache ({identity}); use --restart or another run directory"
            )
        saved = ckpt.get("config", {})
        origin = self.origin = ckpt.get("origin") or {}
        for section in MODEL_SECTIONS:
            if with_added_keys(section, saved.get(section)) != to_dict(getattr(self.cfg, section)):
                hint = (f"; this run was imported: train it with {' '.join(origin['train_args'])}"
                        if origin.get("train_args") else "")
                raise ckpt_io.CheckpointError(
                    f"{path}: the run's {section} ({saved.get(section)}) differs from the config "
                    f"({to_dict(getattr(self.cfg, section))}); use --restart or another run "
                    f"directory{hint}"
                )
        self.cfg, kept = config_for_resume(self.cfg, saved)
        if kept:
            log.info("%s: started before %s existed; resuming as it ran (%s)", path,
                     ", ".join(k.split("=")[0] for k in kept), ", ".join(kept))
        if origin and ckpt.get("cache_manifest_digest") is None:
            log.info("%s: imported from %s (step %s); fine-tuning on %s", path,
                     origin.get("file"), ckpt.get("step"), self.cache_dir)
        elif ckpt.get("cache_manifest_digest") != self.digest:
            log.warning("%s: the cache manifest changed since this run started; resuming anyway",
                        self.cache_dir)
        self.denoiser.load_state_dict(ckpt["denoiser"])
        # an imported run may lack D and the optimiser states: those start fresh
        for name, target in (("discriminator", self.discriminator), ("opt_g", self.opt_g),
                             ("opt_d", self.opt_d)):
            if ckpt.get(name) is not None:
                target.load_state_dict(ckpt[name])
            else:
                log.info("%s: no %s state in the checkpoint; it starts fresh", path, name)
        self.step = int(ckpt["step"])
        self.val = dict(ckpt.get("val") or {})
        self.best_val = float(ckpt.get("best_val", math.inf))
        ckpt_io.restore_rng(ckpt["rng"])
        log.info("resumed %s at step %d", path, self.step)

    def _init_ema(self, resumed: dict[str, Any] | None) -> None:
        """The exponential moving average of G's weights (``train.ema_decay``; None: off)."""
        self.ema = None
        if self.cfg.ema_decay is not None:
            self.ema = ema_copy(self.denoiser, (resumed or {}).get("denoiser_ema"))

    def next_batch(self) -> Batch:
        """The training batch of the current step (``{"noisy", "clean"}`` ``Tensor[B x D x F]``).

        Windows that failed their checks (checksum, non-finite values) were left out of it by
        the reader, with a warning naming the file; the run stops when more than
        ``train.data.max_corrupt_share`` of the windows read (at least of the split) were bad.
        """
        batch = next(self._batches)
        bad = int(batch.pop(CORRUPT_KEY, 0))
        self.windows_read += len(batch["noisy"]) + bad
        self.windows_corrupt += bad
        limit = self.cfg.data.max_corrupt_share * max(self.windows_read, self.train_src.windows)
        if self.windows_corrupt > limit:
            raise CacheDataError(
                f"{self.cache_dir}: {self.windows_corrupt} of {self.windows_read} windows read "
                f"were corrupt, more than train.data.max_corrupt_share "
                f"({self.cfg.data.max_corrupt_share:g}); the warnings above name the files "
                "(rebuild those shards: delete them and rerun `cleancodec cache`)")
        return batch

    # --- one step ----------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return bf16_autocast(self.env.device, self.cfg.bf16)

    def _set_lr(self) -> None:
        f = warmup_factor(self.step, self.cfg.optim.warmup_steps)
        for opt, base in ((self.opt_g, self.cfg.optim.lr_g), (self.opt_d, self.cfg.optim.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * f

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One D update then one G update on ``batch`` (``Tensor[B x D x F]`` noisy / clean).

        Returns the detached losses (``d/...``, ``g/...``) and both gradient norms.
        """
        dev = self.env.device
        noisy = batch["noisy"].to(dev, torch.float32, non_blocking=True)
        clean = batch["clean"].to(dev, torch.float32, non_blocking=True)
        self._set_lr()
        clip = self.cfg.optim.grad_clip
        with self._autocast():
            fake = self.g(noisy)
            real_n = self.denoiser.normalize(clean)
            fake_n = self.denoiser.normalize(fake)
            d_losses = discriminator_losses(self.d, real_n, fake_n, self.cfg.loss)
        self.opt_d.zero_grad(set_to_none=True)
        d_losses["d/loss"].backward()
        d_norm = clip_grad_norm_(self.discriminator.parameters(), clip)
        # Gradients are all-reduced under DDP, so every rank sees the same norm and skips alike;
        # a non-finite loss always gives a non-finite norm.
        d_ok = bool(torch.isfinite(d_norm))
        if d_ok:
            self.opt_d.step()

        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                g_losses = generator_losses(self.discriminator, real_n, fake_n, self.cfg.loss)
            self.opt_g.zero_grad(set_to_none=True)
            g_losses["g/loss"].backward()
        finally:
            self.discriminator.requires_grad_(True)
        g_norm = clip_grad_norm_(self.denoiser.parameters(), clip)
        g_ok = d_ok and bool(torch.isfinite(g_norm))
        if g_ok:
            self.opt_g.step()
            if self.ema is not None:
                update_ema(self.ema, self.denoiser, self.cfg.ema_decay, self.step)
        out = {k: v.detach() for k, v in {**d_losses, **g_losses}.items()}
        out["d/grad_norm"], out["g/grad_norm"] = d_norm.detach(), g_norm.detach()
        if not g_ok:
            out[SKIPPED_KEY] = torch.ones(())
        return out

    def _count_skip(self, losses: dict[str, torch.Tensor]) -> bool:
        """Book a step whose loss or gradient was not finite (no weights changed); stop the run
        after ``train.max_skipped_steps`` such steps in a row. Returns whether it was skipped."""
        if SKIPPED_KEY not in losses:
            self.skipped_in_a_row = 0
            return False
        self.skipped_in_a_row += 1
        self.skipped_total += 1
        log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row, %d in all)",
                    self.step, self.skipped_in_a_row, self.skipped_total)
        if self.skipped_in_a_row >= self.cfg.max_skipped_steps:
            raise FloatingPointError(
                f"{self.skipped_in_a_row} steps in a row had a non-finite loss or gradient (step "
                f"{self.step}); stopped. The last good weights are in "
                f"{self.run_dir / ckpt_io.LATEST} (lower the learning rates, or check the cache)"
            )
        return True

    # --- validation --------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Latent L1(denoised, clean), L1(noisy, clean) and their ratio (gain) on the val split.

        The ``val/...`` figures are those of the weights denoise will use: the EMA of G when
        ``train.ema_decay`` is set (then ``val/latent_l1_raw`` and ``val/gain_raw`` are G's own),
        else G. Each rank takes its share of the split; the sums are added over ranks.
        """
        models = [self.ema, self.denoiser] if self.ema is not None else [self.denoiser]
        sums = torch.zeros(1 + len(models) + 1, dtype=torch.float64, device=self.env.device)
        for batch in val_batches(self.val_src, self.cfg.data, self.env.rank, self.env.world_size):
            noisy = batch["noisy"].to(self.env.device, torch.float32)
            clean = batch["clean"].to(self.env.device, torch.float32)
            for i, model in enumerate(models):
                with self._autocast():
                    denoised = model(noisy).float()
                sums[i] += (denoised - clean).abs().sum(dtype=torch.float64)
            sums[-2] += (noisy - clean).abs().sum(dtype=torch.float64)
            sums[-1] += clean.numel()
        all_reduce_sum(sums, self.env)
        *l1s, noisy_l1, n = sums.tolist()

        def gain(l1: float) -> float:
            return l1 / noisy_l1 if noisy_l1 > 0 else float("nan")

        out = {"val/latent_l1": l1s[0] / n, "val/noisy_l1": noisy_l1 / n, "val/gain": gain(l1s[0])}
        if len(l1s) > 1:
            out.update({"val/latent_l1_raw": l1s[1] / n, "val/gain_raw": gain(l1s[1])})
        return out

    # --- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, light: bool = False) -> dict[str, Any]:
        """The checkpoint dict (``light``: without optimiser states, for ``best.pt``)."""
        return {
            "format_version": ckpt_io.FORMAT_VERSION,
            "model_args": dict(self.denoiser.model_args),
            "disc_args": dict(self.discriminator.model_args),
            "denoiser": self.denoiser.state_dict(),
            "denoiser_ema": self.ema.state_dict() if self.ema is not None else None,
            "discriminator": self.discriminator.state_dict(),
            "opt_g": None if light else self.opt_g.state_dict(),
            "opt_d": None if light else self.opt_d.state_dict(),
            "step": self.step,
            "rng": ckpt_io.capture_rng(),
            "config": to_dict(self.cfg),
            "codec_identity": self.manifest["codec"]["identity"],
            "cache_manifest_digest": self.digest,
            "val": dict(self.val),
            "best_val": self.best_val,
            "origin": self.origin,          # where an imported run came from ({} otherwise)
            "data": {"storage": self.train_src.storage, "world_size": self.env.world_size,
                     "num_workers": self.cfg.data.num_workers},
        }

    def _save(self, name: str, light: bool = False) -> None:
        if self.env.is_main:
            ckpt_io.save_atomic(self.checkpoint(light), self.run_dir / name)

    # --- the loop ----------------------------------------------------------------------------
    def train(self, stop: GracefulStop | None = None) -> dict[str, Any]:
        """Run until ``cfg.steps``; returns the final metrics (see :func:`fit`).

        When ``stop`` is requested (SIGINT, SIGTERM, SIGUSR1), the step in flight finishes,
        ``latest.pt`` is written and :class:`StopRequested` is raised; every rank stops at the
        same step.
        """
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.env.is_main and cfg.progress), desc=f"train {cfg.run_name}")
        sums: dict[str, torch.Tensor] = {}
        count, t_last, steps_per_s = 0, time.perf_counter(), float("nan")
        try:
            while self.step < cfg.steps:
                losses = self.train_step(self.next_batch())
                if not self._count_skip(losses):
                    for key, value in losses.items():
                        sums[key] = sums.get(key, 0) + value.float()
                    count += 1
                self.step += 1
                bar.update(1)
                if (self.step % cfg.log_every == 0 or self.step == cfg.steps) and count:
                    now = time.perf_counter()
                    steps_per_s = count / max(now - t_last, 1e-9)
                    self._log_train(sums, count, steps_per_s, bar)
                    sums, count, t_last = {}, 0, now
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    self._validate_and_keep_best(bar)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self._save(ckpt_io.LATEST)
                if self.step in cfg.milestones:
                    self._save(ckpt_io.milestone_name(self.step))
                if stop is not None and self._stop_agreed(stop):
                    self._save(ckpt_io.LATEST)
                    where = self.run_dir / ckpt_io.LATEST
                    log.warning("%s: saved %s at step %d; rerun the same command to resume",
                                stop.name, where, self.step)
                    raise stop.stop(f"{where} saved at step {self.step}; rerun the same "
                                    "command to resume")
        finally:
            bar.close()
            self._batches = None
            if self.logger:
                self.logger.close()
        if not self.val:
            self.val = self.validate()
        summary = {"step": self.step, **self.val, "best/latent_l1": self.best_val,
                   "train/steps_per_s": steps_per_s, "run_dir": str(self.run_dir)}
        if self.env.is_main:
            write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        return summary

    def _stop_agreed(self, stop: GracefulStop) -> bool:
        """Whether any rank was asked to stop (one all-reduce per step under DDP)."""
        if self.env.world_size <= 1:
            return stop.requested
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=self.env.device)
        all_reduce_sum(flag, self.env)
        agreed = flag.item() > 0
        if agreed:
            stop.request(stop.signum or signal.SIGTERM)
        return agreed

    def _log_train(self, sums: dict[str, torch.Tensor], count: int, steps_per_s: float,
                   bar: tqdm) -> None:
        """Average the summed losses over steps and ranks; log them (main rank) and check them."""
        keys = sorted(sums)                    # the same on every rank
        means = torch.stack([sums[k] for k in keys]) / count
        all_reduce_sum(means, self.env)
        scalars = dict(zip(keys, (means / self.env.world_size).tolist()))
        bad = [k for k, v in scalars.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"non-finite {bad} by step {self.step}; the last good weights are in "
                f"{self.run_dir / ckpt_io.LATEST} (lower the learning rates or check the cache)"
            )
        scalars["lr/g"] = self.opt_g.param_groups[0]["lr"]
        scalars["lr/d"] = self.opt_d.param_groups[0]["lr"]
        scalars["perf/steps_per_s"] = steps_per_s
        wait, now = self._batches.wait_seconds, time.perf_counter()
        scalars["perf/data_wait_share"] = (wait - self._wait_mark[0]) / max(
            now - self._wait_mark[1], 1e-9)
        self._wait_mark = (wait, now)
        scalars["data/corrupt_windows"] = float(self.windows_corrupt)
        self.logger.log(self.step, scalars)
        self._postfix.update({"g/l1": f"{scalars['g/latent_l1']:.4f}",
                              "d": f"{scalars['d/loss']:.3f}"})
        bar.set_postfix(self._postfix)

    def _validate_and_keep_best(self, bar: tqdm) -> None:
        self.val = self.validate()
        self.logger.log(self.step, self.val)
        if self.val["val/latent_l1"] < self.best_val:
            self.best_val = self.val["val/latent_l1"]
            self._save(ckpt_io.BEST, light=True)
            if self.env.is_main:  # what denoise's checkpoint discovery reads without torch.load
                write_json_atomic(self.run_dir / BEST_INFO_FILE, {
                    "format_version": ckpt_io.FORMAT_VERSION, "step": self.step,
                    "codec_identity": self.manifest["codec"]["identity"],
                    "cache_manifest_digest": self.digest, "val": dict(self.val),
                    "best_val": self.best_val})
        self._postfix["val_gain"] = f"{self.val['val/gain']:.3f}"
        bar.set_postfix(self._postfix)


def fit(cfg: TrainConfig, cache_dir: str | Path, run_dir: str | Path,
        restart: bool = False) -> dict[str, Any]:
    """Train the denoiser on a latent cache; resume from ``<run_dir>/latest.pt`` when present.

    Parameters
    ----------
    cfg : TrainConfig
        Resolved train config (preset applied; see :func:`trainer.config.load_train_config`).
    cache_dir : str or Path
        A cache written by ``cleancodec cache`` (its manifest gives D, F, dtype, codec identity).
    run_dir : str or Path
        Checkpoints and logs.
    restart : bool
        Move an existing run in ``run_dir`` aside and start from step 0.

    Returns
    -------
    dict
        ``step``, ``val/latent_l1``, ``val/noisy_l1``, ``val/gain`` (1.0 = no change),
        ``best/latent_l1``, ``train/steps_per_s``, ``run_dir``.
    """
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    with process_group(cfg.device) as env, GracefulStop() as stop:
        lock = DirectoryLock(run_dir, "train") if env.is_main else contextlib.nullcontext()
        with lock, named_os_errors(run_dir):
            trainer = Trainer(cfg, cache_dir, run_dir, env)
            trainer.prepare(restart)
            return trainer.train(stop)
