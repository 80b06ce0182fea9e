"""What the grid sees of a site's draw: ramp statistics and oscillation band power (DESIGN §8).

Pure functions on a recorded grid signal (kW on a regular step ``dt_s``):

* ramps are ``|grid[t+1] - grid[t]| / dt_s`` per feed (domain), at the trace's step;
* ``ramp_over_limit_seconds_share`` is the share of step intervals in which some feed ramps
  faster than the limit (a relative tolerance of 1e-6 absorbs float noise);
* band power is the integral of a Welch periodogram (Hann window, 50 % overlap, segments of
  ``WELCH_SEGMENT_S``, mean removed per segment) of the site signal over the band. The band is
  0.1-20 Hz (utilities' oscillation concern, Choukse et al., arXiv 2508.14318); a step resolves
  only up to its Nyquist frequency ``1 / (2 dt_s)``, so the band used is
  ``[0.1, min(20, Nyquist)]`` and a step coarser than ``MAX_BAND_STEP_S`` (Nyquist below 1 Hz,
  less than a decade of the band) gives no figure.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

BAND_LOW_HZ = 0.1
BAND_HIGH_HZ = 20.0
#: Coarsest step whose Nyquist frequency (1 Hz) covers a decade of the band.
MAX_BAND_STEP_S = 0.5
#: Welch segment length: 60 s gives bins of 1/60 Hz, six below the band's lower edge.
WELCH_SEGMENT_S = 60.0
#: A policy whose band power is below this share of the reference's is reported at the floor
#: (-10 log10 of it = 120 dB), so a perfectly flat signal gives a finite number.
POWER_FLOOR_RATIO = 1e-12
RAMP_TOLERANCE = 1e-6


def ramps_kw_per_s(grid_kw: FloatArray, dt_s: float) -> FloatArray:
    """(T-1, D) absolute ramp of each feed between consecutive steps, kW/s."""
    grid = np.asarray(grid_kw, dtype=np.float64)
    if grid.ndim == 1:
        grid = grid[:, np.newaxis]
    if dt_s <= 0 or not math.isfinite(dt_s):
        raise ValueError(f"dt_s must be a finite number > 0: {dt_s}")
    out: FloatArray = np.abs(np.diff(grid, axis=0)) / dt_s
    return out


def ramp_metrics(
    grid_kw: FloatArray, dt_s: float, limit_kw_per_s: float | None
) -> dict[str, float]:
    """``max_grid_ramp_kw_per_s``, ``p99_grid_ramp_kw_per_s`` (over steps, of the worst feed's
    ramp) and, with a limit, ``ramp_over_limit_seconds_share``."""
    worst = ramps_kw_per_s(grid_kw, dt_s).max(axis=1, initial=0.0)
    out = {
        "max_grid_ramp_kw_per_s": float(worst.max(initial=0.0)),
        "p99_grid_ramp_kw_per_s": float(np.percentile(worst, 99)) if worst.size else 0.0,
    }
    if limit_kw_per_s is not None:
        over = worst > limit_kw_per_s * (1 + RAMP_TOLERANCE)
        out["ramp_over_limit_seconds_share"] = float(over.mean()) if worst.size else 0.0
    return out


def band_edges_hz(dt_s: float) -> tuple[float, float] | None:
    """The part of 0.1-20 Hz that a step resolves, or None when the step is too coarse."""
    if dt_s > MAX_BAND_STEP_S:
        return None
    return BAND_LOW_HZ, min(BAND_HIGH_HZ, 0.5 / dt_s)


def welch_psd(
    signal: FloatArray, dt_s: float, segment_s: float = WELCH_SEGMENT_S
) -> tuple[FloatArray, FloatArray]:
    """One-sided power spectral density (units^2/Hz) by Welch's method; (frequencies, psd)."""
    x = np.asarray(signal, dtype=np.float64)
    n = x.shape[0]
    nper = max(min(int(round(segment_s / dt_s)), n), 2)
    step = max(nper // 2, 1)
    window = np.hanning(nper)
    scale = 1.0 / ((1.0 / dt_s) * float(np.sum(window**2)))
    starts = range(0, n - nper + 1, step)
    psd = np.zeros(nper // 2 + 1)
    count = 0
    for s in starts:
        seg = x[s : s + nper]
        spec = np.fft.rfft((seg - seg.mean()) * window)
        psd += scale * np.abs(spec) ** 2
        count += 1
    psd /= max(count, 1)
    psd[1:] *= 2.0  # one-sided
    if nper % 2 == 0:
        psd[-1] /= 2.0  # the Nyquist bin has no mirror
    freqs: FloatArray = np.fft.rfftfreq(nper, dt_s).astype(np.float64)
    return freqs, psd


def band_power(signal_kw: FloatArray, dt_s: float) -> float | None:
    """Power (kW^2) of the signal in the band the step resolves, or None (step too coarse)."""
    edges = band_edges_hz(dt_s)
    if edges is None:
        return None
    freqs, psd = welch_psd(signal_kw, dt_s)
    lo, hi = edges
    in_band = (freqs >= lo) & (freqs <= hi)
    df = float(freqs[1] - freqs[0]) if freqs.shape[0] > 1 else 0.0
    return float(psd[in_band].sum() * df)


def band_power_reduction_db(power: float, reference: float) -> float:
    """How far below ``reference`` a band power is, in dB (positive = less oscillation)."""
    if reference <= 0:
        return 0.0
    return float(10.0 * math.log10(reference / max(power, POWER_FLOOR_RATIO * reference)))
