"""pipeline.mix: DNS-style mixing, exact SNR, level, clipping guard, reproducibility."""
import numpy as np
import pytest

from cleancodec.pipeline import mix as M

SR = 16000


def _speechlike(rng, n=3 * SR):
    t = np.arange(n) / SR
    env = (np.sin(2 * np.pi * 3 * t) > -0.2).astype(np.float32)
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * env
    return (tone + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.3, 20.0])
def test_requested_snr_is_met(snr):
    rng = np.random.default_rng(1)
    clean, noise = _speechlike(rng), rng.standard_normal(3 * SR).astype(np.float32)
    res = M.mix(clean, noise, snr_db=snr, level_dbfs=-25.0)
    assert abs(M.snr_db(res.noisy - res.noise, res.noise) - snr) < 0.1
    np.testing.assert_allclose(res.noisy, res.clean + res.noise, atol=1e-5)


def test_target_level_and_clipping_guard():
    rng = np.random.default_rng(2)
    clean, noise = _speechlike(rng), rng.standard_normal(3 * SR).astype(np.float32)
    res = M.mix(clean, noise, snr_db=10.0, level_dbfs=-30.0)
    assert not res.clipped
    assert abs(M.rms_dbfs(res.noisy) - (-30.0)) < 0.05
    loud = M.mix(clean, noise, snr_db=10.0, level_dbfs=-1.0)
    assert loud.clipped
    assert np.max(np.abs(loud.noisy)) <= 0.99 + 1e-6
    assert abs(M.snr_db(loud.clean, loud.noise) - 10.0) < 0.1  # rescaling keeps the SNR


def test_same_seed_bit_identical_and_windows_independent():
    def one(seed, split, k):
        rng = M.window_rng(seed, split, k)
        clean = _speechlike(rng)
        noise = M.fit_noise(rng.standard_normal(SR).astype(np.float32), 3 * SR, rng)
        p = M.draw_mix_params(rng, M.MixConfig(), have_rirs=False)
        return M.mix(clean, noise, p.snr_db, p.level_dbfs).noisy

    a, b = one(7, "train", 3), one(7, "train", 3)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, one(7, "train", 4))
    assert not np.array_equal(a, one(7, "val", 3))
    assert not np.array_equal(a, one(8, "train", 3))


def test_draw_params_within_ranges():
    cfg = M.MixConfig(snr_min_db=0, snr_max_db=5, level_min_dbfs=-30, level_max_dbfs=-20,
                      reverb_prob=0.5)
    draws = [M.draw_mix_params(M.window_rng(0, "train", k), cfg, True) for k in range(200)]
    assert all(0 <= d.snr_db <= 5 and -30 <= d.level_dbfs <= -20 for d in draws)
    frac = np.mean([d.reverb for d in draws])
    assert 0.35 < frac < 0.65
    assert not any(M.draw_mix_params(M.window_rng(0, "t", k), cfg, False).reverb for k in range(50))


def test_fit_noise_loops_short_noise():
    rng = np.random.default_rng(0)
    noise = np.arange(100, dtype=np.float32)
    seg = M.fit_noise(noise, 250, rng)
    assert seg.shape == (250,)
    # consecutive samples follow the looped sequence
    assert np.all((np.diff(seg) == 1) | (np.diff(seg) == -99))
    long = M.fit_noise(np.arange(1000, dtype=np.float32), 250, rng)
    assert np.all(np.diff(long) == 1)


def test_silence_detection():
    cfg = M.MixConfig()
    rng = np.random.default_rng(0)
    speech = _speechlike(rng)
    silent = np.zeros(3 * SR, dtype=np.float32)
    silent[:SR // 2] = speech[:SR // 2]
    assert not M.is_mostly_silent(speech, SR, cfg)
    assert M.is_mostly_silent(silent, SR, cfg)


def test_reverb_keeps_dry_target_unless_configured():
    rng = np.random.default_rng(3)
    clean, noise = _speechlike(rng), rng.standard_normal(3 * SR).astype(np.float32)
    rir = np.zeros(4000, dtype=np.float32)
    rir[100] = 1.0
    rir[100:] += 0.3 * np.exp(-np.arange(3900) / 800.0) * rng.standard_normal(3900)
    dry = M.mix(clean, noise, 5.0, -25.0, rir=rir)
    wet = M.mix(clean, noise, 5.0, -25.0, rir=rir, cfg=M.MixConfig(reverb_target=True))
    assert dry.reverb and wet.reverb
    assert abs(M.snr_db(dry.noisy - dry.noise, dry.noise) - 5.0) < 0.1
    # dry target is the scaled clean; reverberant target differs from it
    corr = np.corrcoef(dry.clean, clean)[0, 1]
    assert corr > 0.999
    assert np.corrcoef(wet.clean, clean)[0, 1] < corr
    with pytest.raises(ValueError):
        M.apply_rir(clean, np.zeros(10))
