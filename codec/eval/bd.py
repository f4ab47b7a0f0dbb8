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
`bd_table` applies them to every measured codec of a sweep against an anchor.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

from codec.eval.metrics import msssim_db

__all__ = ["bd_rate", "bd_psnr", "bd_quality", "bd_table", "format_bd_table"]


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


def _curve_of(entry: dict) -> dict:
    r = entry["results"]
    return {"bpp": r["bpp"], "psnr": r["psnr-rgb"], "ms-ssim": r.get("ms-ssim")}


def bd_table(entries: list[dict], anchor: str,
             references: dict[str, dict] | None = None) -> dict[str, Any]:
    """BD-rate (PSNR and MS-SSIM in dB) and BD-PSNR of every measured codec
    against ``anchor`` (a measured codec, or a reference curve as ``ref:NAME``
    or plain ``NAME`` when no measured codec has that name)."""
    curves = {e["name"]: _curve_of(e) for e in entries}
    refs = references or {}
    if anchor in curves:
        a = curves[anchor]
        anchor_kind = "measured"
    else:
        ref_name = anchor[4:] if anchor.startswith("ref:") else anchor
        if ref_name not in refs:
            raise ValueError(f"anchor {anchor!r} is neither a measured codec "
                             f"({', '.join(curves) or 'none'}) nor a reference curve")
        a = refs[ref_name]
        anchor_kind = "reference"

    def safe(fn, *args):
        try:
            v = fn(*args)
        except ValueError:
            return None
        return None if v is None or not math.isfinite(v) else round(float(v), 4)

    rows = []
    for name, c in curves.items():
        row: dict[str, Any] = {"codec": name}
        row["bd_rate_psnr_pct"] = safe(bd_rate, a["bpp"], a["psnr"], c["bpp"], c["psnr"])
        row["bd_psnr_db"] = safe(bd_psnr, a["bpp"], a["psnr"], c["bpp"], c["psnr"])
        if a.get("ms-ssim") and c.get("ms-ssim"):
            qa = [msssim_db(v) for v in a["ms-ssim"]]
            qc = [msssim_db(v) for v in c["ms-ssim"]]
            row["bd_rate_msssim_pct"] = safe(bd_rate, a["bpp"], qa, c["bpp"], qc)
            row["bd_msssim_db"] = safe(bd_psnr, a["bpp"], qa, c["bpp"], qc)
        else:
            row["bd_rate_msssim_pct"] = None
            row["bd_msssim_db"] = None
        rows.append(row)
    return {
        "anchor": anchor,
        "anchor_kind": anchor_kind,
        "method": "Bjontegaard, piecewise cubic (PCHIP) interpolation of log10(bpp), "
                  "integrated over the overlapping quality range; MS-SSIM in dB "
                  "(-10 log10(1 - MS-SSIM)); null = curves do not overlap",
        "rows": rows,
    }


def format_bd_table(bd: dict) -> str:
    def f(v, unit):
        return "n/a" if v is None else f"{v:+.2f}{unit}"

    head = ["codec", "BD-rate PSNR", "BD-PSNR", "BD-rate MS-SSIM", "BD-MS-SSIM"]
    body = [[r["codec"], f(r["bd_rate_psnr_pct"], " %"), f(r["bd_psnr_db"], " dB"),
             f(r["bd_rate_msssim_pct"], " %"), f(r["bd_msssim_db"], " dB")]
            for r in bd["rows"]]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [f"BD metrics against {bd['anchor']} ({bd['anchor_kind']}; negative BD-rate = "
           "fewer bits):", line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    return "\n".join(out)
