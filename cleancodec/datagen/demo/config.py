"""The ``demo_data`` section of a profile (``conf/demo_data.yaml``) as dataclasses.

The corpus definition (which packages, which voice is which speaker, which speaker goes to
which split, licenses) lives in the YAML file only; the dataclass defaults here are the tuning
knobs, so a profile that lists no sources builds nothing: :func:`require_sources` refuses it
at build time (an empty definition is still a valid config: ``cleancodec config`` prints it).
Each dataclass checks its values in ``__post_init__`` (:func:`cleancodec.core.config.require`),
naming the key: splits disjoint, every enabled speaker in one split, a real speaker in train and
in test (babble is made from training speakers), known noise kinds, ordered ranges.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cleancodec.core.config import ConfigError, from_dict, require
from cleancodec.datagen.noise_synth import GENERATED_KINDS, NoiseSynthConfig

SPLITS = ("train", "val", "test")
APT_UPDATE_MODES = ("auto", "never")


@dataclass
class SpeechSource:
    """One voice recorded in one Debian package.

    ``files`` is a glob relative to the unpacked package root (``**`` allowed); ``exclude``
    are globs (relative to the same root) removed from that list. One speaker may have several
    sources (one voice recorded in two languages): they always land in the same split.
    """

    package: str
    speaker: str
    language: str
    license: str
    files: str
    exclude: list[str] = field(default_factory=list)
    synthetic: bool = False
    enabled: bool = True
    max_minutes: float | None = None  # cap on trimmed speech kept from this source
    note: str = ""


@dataclass
class NoisePackage:
    """Noise files from one Debian package, sorted into kinds by name.

    ``kinds`` maps a kind to ``fnmatch`` patterns on the file stem; the first kind whose pattern
    matches wins, files matching no kind are left out. ``license`` applies to files the package's
    machine-readable copyright file does not name.
    """

    package: str
    license: str
    files: str
    kinds: dict[str, list[str]]
    max_seconds_per_file: float | None = None
    enabled: bool = True


@dataclass
class SessionConfig:
    """How a voice's short prompts become clean speech files (``clean/<speaker>/*.wav``)."""

    seconds: float = 30.0  # target length of one session file
    gap_min_seconds: float = 0.25  # pause inserted between consecutive prompts
    gap_max_seconds: float = 0.7
    trim_threshold_db: float = -50.0  # leading/trailing frames under this level (dBFS) are cut
    trim_frame_ms: float = 10.0
    trim_pad_ms: float = 60.0  # silence kept on each side of the trimmed prompt
    min_prompt_seconds: float = 0.15  # shorter prompts after trimming are skipped as empty


@dataclass
class RealNoiseConfig:
    """How package noise files are cut, and how short sounds become event sequences."""

    segment_seconds: float = 30.0  # long files are cut into segments of this length
    min_file_seconds: float = 2.0  # shorter sounds are pooled into event sequences
    event_sequence_seconds: float = 20.0
    event_rate_min_hz: float = 0.5
    event_rate_max_hz: float = 3.0
    event_gain_db_range: float = 12.0
    event_sequences: dict[str, int] = field(
        default_factory=lambda: {"train": 2, "val": 1, "test": 1})


@dataclass
class GeneratedNoiseConfig(NoiseSynthConfig):
    """Seeded generated noise: kinds, files per split, length; the synthesiser's settings
    (level, babble recipe, mains frequencies) are those of :class:`NoiseSynthConfig`."""

    kinds: list[str] = field(default_factory=lambda: list(GENERATED_KINDS))
    seconds: float = 30.0
    files: dict[str, int] = field(default_factory=lambda: {"train": 4, "val": 1, "test": 1})

    where = "demo_data.generated"

    def __post_init__(self) -> None:
        super().__post_init__()
        for kind in self.kinds:
            require(kind in GENERATED_KINDS, f"{self.where}.kinds",
                    f"holds an unknown kind {kind!r}; known: {list(GENERATED_KINDS)}")


@dataclass
class SplitConfig:
    """Speaker-disjoint splits (fixed here) and the share of noise files held out."""

    speakers: dict[str, list[str]] = field(default_factory=dict)
    noise_test_fraction: float = 0.2
    noise_val_fraction: float = 0.1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.speakers) - set(SPLITS))
        require(not unknown, "demo_data.splits.speakers", f"has unknown split(s) {unknown}; "
                f"use {SPLITS}")
        owner: dict[str, str] = {}
        for split, speakers in self.speakers.items():
            for spk in speakers:
                require(spk not in owner, "demo_data.splits",
                        f"puts speaker {spk!r} in both {owner.get(spk)!r} and {split!r}")
                owner[spk] = split


@dataclass
class TestSetConfig:
    """The DNS-style synthetic test set ``testset/{clean,noisy}``."""

    clips: int = 50
    seconds: float = 10.0
    snr_min_db: int = 0
    snr_max_db: int = 20
    level_min_dbfs: int = -35
    level_max_dbfs: int = -15
    min_active_fraction: float = 0.6  # clean clips with less active speech are not used
    silence_threshold_db: float = -45.0
    noise_floor_dbfs: float = -70.0  # noise windows quieter than this are redrawn
    max_noise_draws: int = 20

    def __post_init__(self) -> None:
        require(self.snr_min_db <= self.snr_max_db and self.level_min_dbfs <= self.level_max_dbfs,
                "demo_data.testset", "has min above max in the SNR or level range")


@dataclass
class DemoConfig:
    """The ``demo`` section of a profile (``make demo``).

    testset_clips: test-set clips denoised and scored (0 = all of them).
    """

    testset_clips: int = 12


@dataclass
class DemoDataConfig:
    """Everything ``make demo-data`` builds. See ``conf/demo_data.yaml``."""

    out_dir: str = "data/demo"
    deb_cache: str | None = None  # default: <out_dir>/.debs
    seed: int = 0
    sample_rate: int = 16000
    apt_update: str = "auto"  # auto: `apt-get update` once if a package is not found (as root)
    speech: list[SpeechSource] = field(default_factory=list)
    noise_packages: list[NoisePackage] = field(default_factory=list)
    sessions: SessionConfig = field(default_factory=SessionConfig)
    real_noise: RealNoiseConfig = field(default_factory=RealNoiseConfig)
    generated: GeneratedNoiseConfig = field(default_factory=GeneratedNoiseConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    testset: TestSetConfig = field(default_factory=TestSetConfig)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict) and f.name in _NESTED:
                setattr(self, f.name, _as(_NESTED[f.name], value, f"demo_data.{f.name}"))
        self.speech = [_as(SpeechSource, s, f"demo_data.speech[{i}]")
                       for i, s in enumerate(self.speech)]
        self.noise_packages = [_as(NoisePackage, s, f"demo_data.noise_packages[{i}]")
                               for i, s in enumerate(self.noise_packages)]
        require(self.apt_update in APT_UPDATE_MODES, "demo_data.apt_update",
                f"must be 'auto' or 'never', not {self.apt_update!r}")
        owner = split_of_speaker(self)
        missing = sorted({s.speaker for s in self.enabled_speech} - set(owner))
        require(not missing, "demo_data.splits", f"gives speaker(s) {missing} no split")
        if self.enabled_speech:
            for split in ("train", "test"):
                real = [s for s in self.enabled_speech
                        if owner[s.speaker] == split and not s.synthetic]
                require(bool(real), "demo_data.splits", f"the {split!r} split needs at least "
                        "one real (non-synthetic) speaker")

    @property
    def enabled_speech(self) -> list[SpeechSource]:
        return [s for s in self.speech if s.enabled]

    @property
    def enabled_noise_packages(self) -> list[NoisePackage]:
        return [p for p in self.noise_packages if p.enabled]


_NESTED = {"sessions": SessionConfig, "real_noise": RealNoiseConfig,
           "generated": GeneratedNoiseConfig, "splits": SplitConfig, "testset": TestSetConfig}


def _as(cls: type, value: Any, where: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return from_dict(cls, value, where)


def require_sources(cfg: DemoDataConfig) -> None:
    """Refuse a corpus definition without an enabled speech source (nothing to build).

    Raises
    ------
    ConfigError
        Naming ``demo_data.speech``.
    """
    require(bool(cfg.enabled_speech), "demo_data.speech",
            "holds no speech sources (none enabled; see conf/demo_data.yaml)")


def split_of_speaker(cfg: DemoDataConfig) -> dict[str, str]:
    """``speaker -> split`` from the fixed speaker lists."""
    return {spk: split for split, spks in cfg.splits.speakers.items() for spk in spks}

