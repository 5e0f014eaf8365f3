"""Which engine runs ``cleancodec denoise``: the torch models, or an exported full graph under
onnxruntime (``--engine onnx --onnx MODEL.onnx``).

The torch path imports nothing of the export or of onnxruntime: :func:`load_engine` reaches
``infer.onnx_engine`` only when the ONNX engine is asked for.
"""
from __future__ import annotations

from cleancodec.core.codec import CodecConfig
from cleancodec.infer.denoise import DenoiseConfig, Enhancer, load_enhancer

ENGINE_TORCH, ENGINE_ONNX = "torch", "onnx"
ENGINES = (ENGINE_TORCH, ENGINE_ONNX)


def load_engine(engine: str, onnx: str | None, cfg: DenoiseConfig,
                codec_cfg: CodecConfig) -> Enhancer:
    """The torch enhancer (``engine="torch"``: ``load_enhancer(cfg, codec_cfg)``), or an
    exported full graph run by onnxruntime (``engine="onnx"``, ``onnx``: its path; threads from
    ``codec_cfg.num_threads``, the CUDA provider when ``codec_cfg.device`` names CUDA)."""
    if engine == ENGINE_ONNX:
        if not onnx:
            raise ValueError("--engine onnx needs --onnx MODEL.onnx (written by `cleancodec "
                             "export --full CHECKPOINT MODEL.onnx`)")
        from cleancodec.infer.onnx_engine import load_onnx_engine

        return load_onnx_engine(onnx, codec_cfg)
    if engine != ENGINE_TORCH:
        raise ValueError(f"unknown engine {engine!r} ({' | '.join(ENGINES)})")
    return load_enhancer(cfg, codec_cfg)


__all__ = ["ENGINES", "ENGINE_ONNX", "ENGINE_TORCH", "load_engine"]
