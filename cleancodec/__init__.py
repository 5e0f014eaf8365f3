"""cleancodec: speech denoising in the continuous latent space of the DAC 16 kHz codec.

The repository's folders install under this one name: ``cleancodec.pipeline`` (mixing, the
frozen encoder, the latent cache), ``cleancodec.trainer`` (the GAN trainer, which reads only the
cache) and ``cleancodec.infer`` (denoise and evaluate). ``cleancodec.cli`` is the command line.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cleancodec")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
