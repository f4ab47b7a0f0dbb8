"""Bjontegaard delta metrics (BD-rate, BD-PSNR) with piecewise cubic interpolation.

This follows the common Bjontegaard implementations (VCEG-M33 with the
piecewise cubic Hermite interpolation (PCHIP) used by the JVET/VCEG CTC
spreadsheets and the ``bjontegaard`` Python package, ``method="pchip"``):

* BD-rate: interpolate ``log10(rate)`` as a function of quality for both curves
  with PCHIP, integrate both over the overlapping quality interval, and report
  ``10 ** (mean difference) - 1`` in percent. Negative = the test codec needs
  fewer bits for the same quality.
* BD-PSNR (BD-quality): interpolate quality as a function of ``log10(rate)``,
  integrate over the overlapping log-rate interval, and report the mean
  difference (test - anchor) in dB (or in the unit of the quality metric).

A curve needs at least two distinct points; points are sorted and duplicate
abscissae are averaged. If the curves do not overlap, the result is ``nan``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = ["bd_rate", "bd_psnr", "bd_quality"]


def _prepare(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sort by ``x``, drop non-finite points and average duplicate ``x`` values."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("rate and quality must be 1-D sequences of the same length")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0:
        return x, y
    ux, inv = np.unique(x, return_inverse=True)
    uy = np.bincount(inv, weights=y) / np.bincount(inv)
    return ux, uy


def _mean_over_overlap(xa, ya, xt, yt) -> float:
    """Mean of (test - anchor) of two PCHIP curves over their common x interval."""
    xa, ya = _prepare(xa, ya)
    xt, yt = _prepare(xt, yt)
    if xa.size < 2 or xt.size < 2:
        return math.nan
    lo = max(xa[0], xt[0])
    hi = min(xa[-1], xt[-1])
    if not hi > lo:
        return math.nan
    fa = PchipInterpolator(xa, ya, extrapolate=False)
    ft = PchipInterpolator(xt, yt, extrapolate=False)
    ia = fa.integrate(lo, hi)
    it = ft.integrate(lo, hi)
    return float((it - ia) / (hi - lo))


def bd_rate(rate_anchor, quality_anchor, rate_test, quality_test) -> float:
    """BD-rate of ``test`` against ``anchor`` in percent (negative = fewer bits).

    ``rate_*`` are bit rates (bpp, kbps, ... any positive unit, the same for both);
    ``quality_*`` the matching quality values (PSNR in dB, MS-SSIM in dB, ...).
    """
    ra = np.asarray(rate_anchor, dtype=np.float64)
    rt = np.asarray(rate_test, dtype=np.float64)
    if np.any(ra <= 0) or np.any(rt <= 0):
        raise ValueError("rates must be positive")
    # log10(rate) as a function of quality
    d = _mean_over_overlap(quality_anchor, np.log10(ra), quality_test, np.log10(rt))
    if math.isnan(d):
        return math.nan
    return float((10.0 ** d - 1.0) * 100.0)


def bd_quality(rate_anchor, quality_anchor, rate_test, quality_test) -> float:
    """Mean quality difference (test - anchor) at equal rate, e.g. BD-PSNR in dB."""
    ra = np.asarray(rate_anchor, dtype=np.float64)
    rt = np.asarray(rate_test, dtype=np.float64)
    if np.any(ra <= 0) or np.any(rt <= 0):
        raise ValueError("rates must be positive")
    return _mean_over_overlap(np.log10(ra), quality_anchor, np.log10(rt), quality_test)


bd_psnr = bd_quality
