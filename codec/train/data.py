"""Training data: random patches whose content depends only on (seed, step, index), so a
resumed run sees exactly the data an uninterrupted one would have seen."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class RandomPatches:
    """Random patches whose content depends only on (seed, step, index), so a resumed run
    sees exactly the data an uninterrupted one would have seen.

    JPEGs are downscaled by 2x or more so their compression artefacts vanish; lossless
    images by 1x to 2x. Only the cropped region is resized, so big photos stay cheap.
    """

    def __init__(self, folder: str | Path, crop: int, seed: int):
        self.paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"no training images (png/jpg/webp) under {folder}")
        self.crop, self.seed = crop, seed
        self.images = []
        for p in self.paths:
            with Image.open(p) as im:
                self.images.append(im.convert("RGB"))

    def patch(self, step: int, index: int) -> np.ndarray:
        rng = random.Random(f"{self.seed}/{step}/{index}")
        while True:
            i = rng.randrange(len(self.images))
            im, path = self.images[i], self.paths[i]
            lo, hi = (2.0, 4.0) if path.suffix.lower() in {".jpg", ".jpeg"} else (1.0, 2.0)
            hi = min(hi, min(im.size) / self.crop)
            if hi >= lo:
                break
        side = int(round(self.crop * rng.uniform(lo, hi)))
        x0, y0 = rng.randrange(im.width - side + 1), rng.randrange(im.height - side + 1)
        patch = im.resize((self.crop, self.crop), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side))
        if rng.random() < 0.5:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(patch, dtype=np.float32).transpose(2, 0, 1) / 255.0

    def batch(self, step: int, size: int, rank: int = 0) -> np.ndarray:
        return np.stack([self.patch(step, rank * size + i) for i in range(size)])


def patch_batches(data: RandomPatches, start: int, stop: int, size: int, rank: int = 0, loaders: int = 0):
    """The batches (tensors) of steps start..stop-1 in order, cut by `loaders` worker processes
    ahead of the training step (worker w cuts the steps start + w, start + w + loaders, ...; the
    data loader hands them back round-robin, so the order, like each batch, is that of the
    steps), or in this process when `loaders` is 0."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    if loaders == 0:
        return (torch.from_numpy(data.batch(s, size, rank)) for s in range(start, stop))

    class Steps(IterableDataset):
        def __iter__(self):
            w = get_worker_info()
            return (data.batch(s, size, rank) for s in range(start + w.id, stop, w.num_workers))

    # its own generator: seeding the workers must not draw from the training's random stream
    return DataLoader(Steps(), batch_size=None, num_workers=loaders, prefetch_factor=4,
                      pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(0))
