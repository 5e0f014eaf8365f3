"""The ``demo_data`` section of a profile (``conf/demo_data.yaml``) as dataclasses.

The corpus definition (which packages, which voice is which speaker, which speaker goes to
which split, licenses) lives in the YAML file only; the dataclass defaults here are the tuning
knobs, so a profile that lists no sources is an error rather than a silent empty corpus.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cleancodec.core.config import ConfigError, from_dict
from cleancodec.datagen.synth import GENERATED_KINDS, NoiseSynthConfig

SPLITS = ("train", "val", "test")


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


@dataclass
class SplitConfig:
    """Speaker-disjoint splits (fixed here) and the share of noise files held out."""

    speakers: dict[str, list[str]] = field(default_factory=dict)
    noise_test_fraction: float = 0.2
    noise_val_fraction: float = 0.1


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
        if self.apt_update not in ("auto", "never"):
            raise ConfigError(f"demo_data.apt_update must be 'auto' or 'never', "
                              f"not {self.apt_update!r}")

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


def validate(cfg: DemoDataConfig) -> None:
    """Check the corpus definition; raise ConfigError naming the first problem.

    Every enabled speaker has exactly one split, splits are disjoint, at least one real
    (non-synthetic) speaker is held out for test, and train has a real speaker too (babble is
    made from training speakers).
    """
    if not cfg.enabled_speech:
        raise ConfigError("demo_data: no speech sources configured (see conf/demo_data.yaml)")
    unknown = sorted(set(cfg.splits.speakers) - set(SPLITS))
    if unknown:
        raise ConfigError(f"demo_data.splits.speakers: unknown split(s) {unknown}; use {SPLITS}")
    owner: dict[str, str] = {}
    for split, speakers in cfg.splits.speakers.items():
        for spk in speakers:
            if spk in owner:
                raise ConfigError(f"demo_data.splits: speaker {spk!r} is in both "
                                  f"{owner[spk]!r} and {split!r}")
            owner[spk] = split
    speakers = {s.speaker for s in cfg.enabled_speech}
    missing = sorted(speakers - set(owner))
    if missing:
        raise ConfigError(f"demo_data.splits: speaker(s) {missing} have no split")
    for split in ("train", "test"):
        real = [s for s in cfg.enabled_speech if owner[s.speaker] == split and not s.synthetic]
        if not real:
            raise ConfigError(f"demo_data.splits: the {split!r} split needs at least one real "
                              f"(non-synthetic) speaker")
    for kind in cfg.generated.kinds:
        if kind not in GENERATED_KINDS:
            raise ConfigError(f"demo_data.generated.kinds: unknown kind {kind!r}; "
                              f"known: {list(GENERATED_KINDS)}")
    gen = cfg.generated
    if not 1 <= gen.babble_min_talkers <= gen.babble_max_talkers:
        raise ConfigError("demo_data.generated: need 1 <= babble_min_talkers <= babble_max_talkers")
    ts = cfg.testset
    if ts.snr_min_db > ts.snr_max_db or ts.level_min_dbfs > ts.level_max_dbfs:
        raise ConfigError("demo_data.testset: min above max in the SNR or level range")


def split_of_speaker(cfg: DemoDataConfig) -> dict[str, str]:
    """``speaker -> split`` from the fixed speaker lists."""
    return {spk: split for split, spks in cfg.splits.speakers.items() for spk in spks}

