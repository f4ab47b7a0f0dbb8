"""The quality metrics `neurocodec eval` reports: RGB PSNR, luma PSNR and MS-SSIM.

Heavy imports happen inside the functions so that `neurocodec --help` stays fast.
"""
from __future__ import annotations

import math

MS_SSIM_WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]  # pytorch-msssim's (Wang et al. 2003)
WINDOW = 11


def psnr(a, b, peak: float = 255.0) -> float:
    """PSNR in dB between two uint8 arrays of the same shape (inf when identical)."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _luma(x):
    """BT.709 luma (full range, 0..255) of an ...x3 RGB array, as CompressAI's rgb2ycbcr."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    return 0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2]


def y_psnr(a, b) -> float:
    """PSNR of the BT.709 luma of two RGB arrays."""
    return psnr(_luma(a), _luma(b))


def ms_ssim(a, b) -> float:
    """MS-SSIM (pytorch-msssim, data range 255) of two HxWx3 uint8 images.

    pytorch-msssim needs the smaller side > (win - 1) * 2**4 = 160 for its five scales.
    Smaller images use fewer scales (the first weights, renormalized, see `_ms_ssim_levels`),
    and for very small images SSIM with a smaller Gaussian window; images smaller than 3
    pixels give ``nan``.
    """
    import numpy as np
    import torch
    from pytorch_msssim import ms_ssim as pm_ms_ssim
    from pytorch_msssim import ssim as pm_ssim

    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    side = min(a.shape[0], a.shape[1])
    # float32: several times faster than float64 on CPUs, the same MS-SSIM to about 1e-7
    x = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(np.array(b, copy=True)).permute(2, 0, 1)[None].float()
    levels = 5  # the most such that side > (WINDOW - 1) * 2 ** (levels - 1)
    while levels > 1 and side <= (WINDOW - 1) * 2 ** (levels - 1):
        levels -= 1
    with torch.no_grad():
        if levels == 5:
            return float(pm_ms_ssim(x, y, data_range=255.0, size_average=True, win_size=WINDOW))
        if levels >= 2:
            weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float32)
            return float(_ms_ssim_levels(x, y, weights / weights.sum()))
        win = min(WINDOW, side if side % 2 == 1 else side - 1)
        if win < 3:
            return math.nan
        return float(pm_ssim(x, y, data_range=255.0, size_average=True, win_size=win))


# K1 so large that SSIM's luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), with
# C1 = (K1 * 255)^2 = 6.5e16, is exactly 1 in float32 (the mu terms are below 7e4, under
# half an ulp of C1): SSIM then equals its contrast-structure term cs.
_NO_LUMINANCE_K1 = 1e6


def _ms_ssim_levels(x, y, weights):
    """pytorch-msssim's MS-SSIM algorithm with `len(weights)` < 5 scales, through its public
    `ssim` (its `ms_ssim` asserts the 5-scale size even with fewer weights): per channel, the
    contrast-structure term cs at every scale but the last (`ssim` with the luminance term
    switched off), SSIM at the last, each clamped at 0, combined as prod(v ** weights)."""
    import torch
    import torch.nn.functional as F
    from pytorch_msssim import ssim

    def per_channel(a, b, k1):  # the channels as a batch of one-channel images: (1, C) values
        return ssim(a.transpose(0, 1), b.transpose(0, 1), data_range=255.0, size_average=False,
                    win_size=WINDOW, K=(k1, 0.03)).view(1, -1)

    values = []
    for i in range(len(weights)):
        if i < len(weights) - 1:
            values.append(torch.relu(per_channel(x, y, _NO_LUMINANCE_K1)))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
        else:
            values.append(torch.relu(per_channel(x, y, 0.01)))
    return torch.prod(torch.stack(values) ** weights.view(-1, 1, 1), dim=0).mean()


def msssim_db(v: float) -> float:
    """MS-SSIM in dB, -10 log10(1 - MS-SSIM) (nan for a missing value)."""
    if v is None or not math.isfinite(v):
        return math.nan
    return -10.0 * math.log10(max(1.0 - v, 1e-12))
