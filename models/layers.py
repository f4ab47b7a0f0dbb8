"""Layers shared by the image and the video models."""
from __future__ import annotations

import torch.nn as nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor at each position (so results never depend
    on the image size). `nn.LayerNorm` inside, so shipped MLIC weights keep their names
    (`...norm1.norm.weight`); MLIC uses eps 1e-5 (nn.LayerNorm's), the INR frame encoder 1e-6."""

    def __init__(self, ch: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(ch, eps=eps)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def apply(layers: nn.Module, x):
    """A transform's layers on x, at once: the models' default `run` (the codec passes one that
    runs them in bands on several threads, codec.image.bands)."""
    return layers(x)
