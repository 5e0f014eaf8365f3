"""pipeline.config: YAML profiles → dataclasses, base inheritance, clear errors."""
from dataclasses import dataclass, field

import pytest

from cleancodec.pipeline.config import ConfigError, load_profile, load_section, to_dict


@dataclass
class Inner:
    a: int = 1
    b: list = field(default_factory=lambda: [1, 2])


@dataclass
class Stage:
    name: str = "x"
    lr: float = 1e-3
    inner: Inner = field(default_factory=Inner)


def test_section_defaults_and_override(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("stage:\n  lr: 0.5\n  inner:\n    a: 3\n")
    cfg = load_section(p, "stage", Stage)
    assert cfg.lr == 0.5 and cfg.inner.a == 3 and cfg.inner.b == [1, 2] and cfg.name == "x"
    assert load_section(p, "other", Stage) == Stage()
    assert to_dict(cfg) == {"name": "x", "lr": 0.5, "inner": {"a": 3, "b": [1, 2]}}


def test_base_inheritance_merges_recursively(tmp_path):
    (tmp_path / "base.yaml").write_text("stage:\n  name: base\n  inner:\n    a: 5\n    b: [9]\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nstage:\n  inner:\n    a: 6\n")
    cfg = load_section(tmp_path / "child.yaml", "stage", Stage)
    assert (cfg.name, cfg.inner.a, cfg.inner.b) == ("base", 6, [9])


def test_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("stage:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:stage.*lrr"):
        load_section(p, "stage", Stage)


def test_missing_and_loops(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_profile(tmp_path / "a.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_profile(tmp_path / "list.yaml")


def test_repo_profiles_parse():
    from pathlib import Path

    for path in sorted(Path(__file__).resolve().parents[1].glob("conf/*.yaml")):
        assert isinstance(load_profile(path), dict), path
