"""The RD plot of a sweep: PSNR and MS-SSIM (dB) against bpp, measured curves solid,
published references dashed."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from codec.eval.metrics import msssim_db


def plot_rd(entries: list[dict], path: str | os.PathLike, *, title: str = "",
            references: dict[str, dict] | None = None, xlabel: str = "bpp") -> None:
    """PSNR and MS-SSIM (dB) against bpp; measured curves solid, references dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    xmax = max((max(e["results"]["bpp"]) for e in entries), default=None)
    cmap = plt.get_cmap("tab10" if len(entries) <= 10 else "tab20")  # one colour per curve
    for i, e in enumerate(entries):
        r = e["results"]
        kw = dict(marker="o", markersize=4, linewidth=2, color=cmap(i % cmap.N), label=e["name"])
        axes[0].plot(r["bpp"], r["psnr-rgb"], **kw)
        axes[1].plot(r["bpp"], [msssim_db(v) for v in r["ms-ssim"]], **kw)
    refs = references or {}
    rcmap = plt.get_cmap("tab20b")
    for j, (name, c) in enumerate(refs.items()):
        kw = dict(linestyle="--", linewidth=1, marker=".", markersize=3,
                  color=rcmap(j % 20), alpha=0.8, label=f"{name} (published)")
        axes[0].plot(c["bpp"], c["psnr"], **kw)
        if c.get("ms-ssim"):
            axes[1].plot(c["bpp"], [msssim_db(v) for v in c["ms-ssim"]], **kw)
    for ax, ylabel in zip(axes, ["PSNR RGB (dB)", "MS-SSIM (dB, -10 log10(1 - MS-SSIM))"]):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if xmax is not None:
            ax.set_xlim(0, xmax * 1.05)
    if xmax is not None:
        # y range from the measured curves so that far-away references do not squash them
        for k, ax in enumerate(axes):
            ys = [v for e in entries for v in (e["results"]["psnr-rgb"] if k == 0 else
                  [msssim_db(m) for m in e["results"]["ms-ssim"]]) if math.isfinite(v)]
            if ys:
                pad = 0.05 * (max(ys) - min(ys) + 1)
                ax.set_ylim(min(ys) - pad, max(ys) + pad)
    handles: dict[str, Any] = {}
    for ax in axes:
        for hdl, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, hdl)
    axes[1].legend(list(handles.values()), list(handles.keys()), loc="center left",
                   bbox_to_anchor=(1.01, 0.5), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
