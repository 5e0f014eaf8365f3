"""``cleancodec import-seed``: the stage that loads the codec once (its identity and latent size)
and hands the seed checkpoint to :func:`cleancodec.trainer.seed_import.import_seed`, so that the
trainer package itself never touches the codec."""
from __future__ import annotations

from pathlib import Path

from cleancodec.core.codec import CodecConfig, load_codec
from cleancodec.core.config import load_section, to_dict, written_section
from cleancodec.trainer.config import load_train_config
from cleancodec.trainer.seed_import import (
    D_KEY,
    G_KEY,
    SeedImport,
    denoiser_args,
    discriminator_args,
    import_seed,
    read_seed_file,
    strip_ddp,
    train_args_for,
)


def run_import_seed(checkpoint: str | Path, run_dir: str | Path, conf: str | Path | None,
                    codec_choice: str | None, overwrite: bool = False) -> SeedImport:
    """``cleancodec import-seed``: load the codec once to record which latents the run is for
    (its identity and latent size: the seed trained on DAC 16 kHz's pretrained weights), pick
    the seed preset that builds the file's models, and write the run folder.

    The train config recorded is the profile ``conf`` under those overrides, so that
    ``cleancodec train --conf CONF --run RUN_DIR <train_args>`` fine-tunes it as a resume.
    """
    codec_overrides = [f"codec.weights='{codec_choice}'"] if codec_choice else []
    codec = load_codec(load_section(conf, "codec", CodecConfig, codec_overrides))
    path = Path(checkpoint)
    obj = read_seed_file(path)
    g_state = strip_ddp(obj[G_KEY], path, G_KEY)
    model_args = denoiser_args(g_state, path, codec.latent_dim)
    disc_args = None
    if obj.get(D_KEY) is not None:
        disc_args = discriminator_args(strip_ddp(obj[D_KEY], path, D_KEY), path,
                                       codec.latent_dim)
    args = train_args_for(model_args, disc_args, written_section(conf, "train"))
    cfg = load_train_config(conf, None, args)
    return import_seed(path, run_dir, codec.latent_dim, codec.identity, to_dict(cfg), overwrite,
                       train_args=args)
