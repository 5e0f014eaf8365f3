"""pipeline.config: YAML profiles and command-line overrides → typed dataclasses, clear errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from cleancodec.core.config import (
    SECTIONS,
    ConfigError,
    check_overrides,
    load_profile,
    load_section,
    split_overrides,
    to_dict,
)
from cleancodec.schemas import schema

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "conf" / "tiny.yaml"


@dataclass
class Inner:
    a: int = 1
    b: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Stage:
    name: str = "x"
    lr: float = 1e-3
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


def _profile(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_section_defaults_and_profile_values(tmp_path):
    p = _profile(tmp_path, "train:\n  lr: 0.5\n  inner:\n    a: 3\n")
    cfg = load_section(p, "train", Stage)
    assert cfg.lr == 0.5 and cfg.inner.a == 3 and cfg.inner.b == [1, 2] and cfg.name == "x"
    assert load_section(p, "cache", Stage) == Stage()
    assert load_section(None, "train", Stage) == Stage()
    assert to_dict(cfg) == {"name": "x", "lr": 0.5, "limit": None, "inner": {"a": 3, "b": [1, 2]}}


def test_base_inheritance_merges_recursively(tmp_path):
    _profile(tmp_path, "train:\n  name: base\n  inner:\n    a: 5\n    b: [9]\n", "base.yaml")
    child = _profile(tmp_path, "base: base.yaml\ntrain:\n  inner:\n    a: 6\n", "child.yaml")
    cfg = load_section(child, "train", Stage)
    assert (cfg.name, cfg.inner.a, cfg.inner.b) == ("base", 6, [9])


def test_unknown_key_names_the_file_and_the_key_path(tmp_path):
    p = _profile(tmp_path, "train:\n  inner:\n    c: 1\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.inner\.c: Key 'c' not in"):
        load_section(p, "train", Stage)


def test_wrong_type_in_a_profile_names_the_file_and_the_key(tmp_path):
    p = _profile(tmp_path, "train:\n  lr: fast\n", "typed.yaml")
    with pytest.raises(ConfigError, match=r"typed\.yaml: train\.lr: .*'fast'.*Float"):
        load_section(p, "train", Stage)
    p = _profile(tmp_path, "train:\n  inner: {a: 1.5}\n", "int.yaml")
    with pytest.raises(ConfigError, match=r"int\.yaml: train\.inner\.a"):
        load_section(p, "train", Stage)


def test_quoted_numbers_are_converted_to_the_schema_type(tmp_path):
    p = _profile(tmp_path, 'train:\n  lr: "4e-4"\n  inner: {a: "7"}\n')
    cfg = load_section(p, "train", Stage)
    assert cfg.lr == pytest.approx(4e-4) and isinstance(cfg.lr, float)
    assert cfg.inner.a == 7 and isinstance(cfg.inner.a, int)


def test_unknown_section_in_a_profile_is_refused(tmp_path):
    p = _profile(tmp_path, "trian:\n  lr: 1\n", "sec.yaml")
    with pytest.raises(ConfigError, match=r"sec\.yaml: unknown section.*trian"):
        load_profile(p)


def test_missing_and_loops(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "nope.yaml")
    _profile(tmp_path, "base: b.yaml\n", "a.yaml")
    _profile(tmp_path, "base: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="loops"):
        load_profile(tmp_path / "a.yaml")
    _profile(tmp_path, "- 1\n- 2\n", "list.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_profile(tmp_path / "list.yaml")


# --- command-line overrides ------------------------------------------------------------------


def test_override_beats_the_profile_nested_lists_and_null(tmp_path):
    p = _profile(tmp_path, "train:\n  lr: 0.5\n  limit: 3\n")
    cfg = load_section(p, "train", Stage, ["train.lr=0.25", "train.inner.a=9",
                                           "train.inner.b=[4,5,6]", "train.limit=null",
                                           "cache.other=1"])
    assert (cfg.lr, cfg.inner.a, cfg.inner.b, cfg.limit) == (0.25, 9, [4, 5, 6], None)


def test_override_with_a_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"command line: train\.lr: .*'fast'"):
        load_section(None, "train", Stage, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"command line: train\.inner\.a"):
        load_section(None, "train", Stage, ["train.inner.a=many"])


def test_override_of_an_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match=r"command line: train\.inner\.z: Key 'z' not in"):
        load_section(None, "train", Stage, ["train.inner.z=1"])


def test_check_overrides_refuses_other_sections_and_non_overrides():
    check_overrides(["train.steps=3", "train.optim.lr_g=1e-4"], ("train",), "train")
    with pytest.raises(ConfigError, match=r"cache\.seed: `cleancodec train` reads only"):
        check_overrides(["cache.seed=3"], ("train",), "train")
    with pytest.raises(ConfigError, match=r"trian\.steps: unknown section"):
        check_overrides(["trian.steps=3"], ("train",), "train")
    with pytest.raises(ConfigError, match="not an override"):
        check_overrides(["steps"], ("train",), "train")


def test_split_overrides_keeps_paths_apart():
    overrides, rest = split_overrides(["in/dir", "denoise.mix=0.2", "out=x/y", "codec.device=cpu"])
    assert overrides == ["denoise.mix=0.2", "codec.device=cpu"]
    assert rest == ["in/dir", "out=x/y"]


# --- the repository's profiles ---------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((REPO / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_every_profile_loads_into_its_schemas(path):
    profile = load_profile(path)
    assert profile, f"{path} is empty"
    for section in SECTIONS:
        cfg = load_section(path, section, schema(section))
        if section in profile:  # every value written in the profile arrives in the schema
            _assert_subset(profile[section], to_dict(cfg), f"{path.name}:{section}")


def _assert_subset(written, loaded, where):
    if isinstance(written, dict):
        for key, value in written.items():
            _assert_subset(value, loaded[key], f"{where}.{key}")
    elif isinstance(written, list):
        assert len(written) == len(loaded), where
        for i, (value, got) in enumerate(zip(written, loaded)):
            _assert_subset(value, got, f"{where}[{i}]")
    else:
        assert written == loaded or (isinstance(written, (int, float))
                                     and float(written) == float(loaded)), where


def test_every_section_has_a_schema_with_defaults():
    for section in SECTIONS:
        cls = schema(section)
        assert load_section(None, section, cls) == cls()


# --- the command line ------------------------------------------------------------------------


def test_cli_train_refuses_a_bad_override_naming_the_key(tmp_path):
    from cleancodec.cli import main

    for bad, key in (("train.optim.lr_g=fast", "train.optim.lr_g"),
                     ("train.optim.lrg=1", "train.optim.lrg"),
                     ("cache.seed=1", "cache.seed")):
        result = CliRunner().invoke(main, ["train", "--conf", str(TINY), "--cache",
                                           str(tmp_path / "no-cache"), bad])
        assert result.exit_code != 0 and key in result.output, result.output


def test_cli_train_override_sets_the_number_of_steps(tiny_latent_cache, tmp_path):
    from cleancodec.cli import main

    result = CliRunner().invoke(main, ["train", "--conf", str(TINY), "--cache",
                                       str(tiny_latent_cache("zarr")), "--run",
                                       str(tmp_path / "run"), "--quiet", "train.steps=7",
                                       "train.data.num_workers=0", "train.val_every=7"])
    assert result.exit_code == 0, result.output
    assert "step 7: val latent L1" in result.output


def test_cli_config_prints_the_resolved_sections():
    from cleancodec.cli import main

    result = CliRunner().invoke(main, ["config", "--conf", str(TINY), "train", "codec",
                                       "train.steps=11"])
    assert result.exit_code == 0, result.output
    assert "steps: 11" in result.output and "random_arch: tiny" in result.output
    assert "lr_g: 0.0004" in result.output


# --- model presets and the keys a user writes ------------------------------------------------


def _config_output(*args: str) -> dict:
    from omegaconf import OmegaConf

    from cleancodec.cli import main

    result = CliRunner().invoke(main, ["config", *args])
    assert result.exit_code == 0, result.output
    return OmegaConf.to_container(OmegaConf.create(result.output))


def test_a_written_denoiser_key_beats_the_preset_and_config_prints_what_train_builds(tmp_path):
    from cleancodec.trainer.config import load_train_config

    overrides = ["train.preset=medium", "train.denoiser.width=96"]
    cfg = load_train_config(TINY, None, overrides)
    # width from the command line, depth from the profile: the preset fills neither
    assert (cfg.preset, cfg.denoiser.width, cfg.denoiser.depth) == ("medium", 96, 2)
    printed = _config_output("--conf", str(TINY), "train", *overrides)["train"]
    assert printed == to_dict(cfg)
    # the preset fills the keys nobody wrote, the written one keeps its value even when it
    # equals the schema default
    plain = REPO / "conf" / "train.yaml"
    large = load_train_config(plain, None, ["train.preset=large", "train.denoiser.width=512"])
    assert (large.denoiser.width, large.denoiser.depth) == (512, 8)
    assert _config_output("--conf", str(plain), "train", "train.preset=large",
                          "train.denoiser.width=512")["train"] == to_dict(large)
    # a key written in a profile counts as written too, through its base chain
    child = _profile(tmp_path, f"base: {plain}\ntrain:\n  preset: large\n"
                               "  denoiser: {depth: 3}\n")
    resolved = load_train_config(child).denoiser
    assert (resolved.width, resolved.depth) == (768, 3)
    assert load_train_config(child, "medium").denoiser.depth == 3
    # with nothing written, the preset decides
    assert load_train_config(plain, "large").denoiser.width == 768


def test_a_preset_with_an_unknown_key_is_refused_even_when_overruled():
    from cleancodec.trainer.config import load_train_config

    with pytest.raises(ConfigError, match=r"train\.presets\.odd.*wide"):
        load_train_config(None, "odd", ["train.presets={odd: {wide: 3}}",
                                        "train.denoiser.width=8"])


@pytest.mark.parametrize("overrides, width, depth", [
    (["train.preset=medium", "train.denoiser.width=96"], 96, 2),
    (["train.denoiser.width=256"], 256, 2),
])
def test_cli_train_builds_the_model_it_was_told(tiny_latent_cache, tmp_path, overrides, width,
                                               depth):
    import torch

    from cleancodec.cli import main

    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--conf", str(TINY), "--cache",
                                       str(tiny_latent_cache("zarr")), "--run", str(run),
                                       "--quiet", "train.steps=1", "train.val_every=1",
                                       "train.data.num_workers=0", *overrides])
    assert result.exit_code == 0, result.output
    ckpt = torch.load(run / "latest.pt", map_location="cpu", weights_only=True)
    assert (ckpt["model_args"]["width"], ckpt["model_args"]["depth"]) == (width, depth)
    assert ckpt["config"]["denoiser"]["width"] == width
    printed = _config_output("--conf", str(TINY), "train", *overrides)["train"]
    assert printed["denoiser"] == ckpt["config"]["denoiser"]
