"""Starting a run from other weights (`train --init`): same tensors copied, wider layers
widened Net2Net-style to the same function, a Gaussian model's parameter heads carried to
another likelihood family."""
from __future__ import annotations

import json
from pathlib import Path

from codec.files import sha256_file


def init_from(model, path: str | Path, noise: float = 0.25) -> list[str]:
    """Warm-start `model` from a safetensors file (e.g. across a wider latent or wider
    transforms); returns the names of the parameters taken from it.

    A parameter with the same name and shape is copied. One whose every dimension is a
    whole multiple of the file's (a layer widened k times) is widened Net2Net-style so that
    the model computes the same function: output channels are repeated k times, and each
    input channel's weights are split into k parts that sum to the original, W/k plus
    zero-sum noise (`noise` times the weights' std / k). The noise changes nothing while the
    copies are equal, and makes their gradients differ so that they do not stay copies.
    From a Gaussian model (the manifest beside the file says so) to one of another family,
    the parameter heads' last layers are rewritten to emit the same law where the family can
    (`model.from_gaussian`: GG with beta = 2, the mixtures as equal components), so the new
    family starts where the Gaussian training left off. A model of more quality levels gets the
    trained gains and new levels extrapolated from the last two. Everything else keeps its
    fresh initialization. Buffers are not copied: shipped float16 files hold the 1e-9
    likelihood bounds as 0."""
    import torch
    from safetensors.torch import load_file

    own = dict(model.named_parameters())
    modules = dict(model.named_modules())
    from_gaussian = getattr(model, "from_gaussian", None) if _likelihood_of(path) == "gaussian" else None
    taken = {}
    for name, v in load_file(str(path)).items():
        if name not in own or own[name].dim() != v.dim():
            continue
        target = own[name].shape
        v = v.to(own[name].dtype)
        if target == v.shape:
            taken[name] = v
        elif name.endswith("log_gain") and target[1:] == v.shape[1:] and target[0] > v.shape[0]:
            taken[name] = _extend_levels(v, target[0])
        elif from_gaussian and (carried := from_gaussian(name, v)) is not None and carried.shape == target:
            taken[name] = carried
        elif all(t % s == 0 for t, s in zip(target, v.shape)):
            module = modules.get(name.rpartition(".")[0])
            in_dim = _input_dim(module) if name.endswith(".weight") else None
            taken[name] = _widen(v, target, in_dim, noise)
    if not taken:
        raise ValueError(f"no tensor of {path} fits model {type(model).__name__}")
    with torch.no_grad():
        for k, v in taken.items():
            own[k].copy_(v)
    return sorted(taken)


def _extend_levels(log_gain, levels: int):
    """A gain table of more quality levels than it was trained for: the new levels go on along
    the last step between trained levels (the lambda ladder's ratio is nearly constant)."""
    import torch

    step = log_gain[-1] - log_gain[-2]
    extra = [log_gain[-1] + k * step for k in range(1, levels - log_gain.shape[0] + 1)]
    return torch.cat([log_gain, torch.stack(extra)])


def _likelihood_of(path: str | Path) -> str | None:
    """The likelihood family of a weights file, from the manifest.json beside it listing the
    file's sha256 among a model's releases (None if it does not say)."""
    manifest = Path(path).parent / "manifest.json"
    if not manifest.exists():
        return None
    sha256 = sha256_file(path)
    for entry in json.loads(manifest.read_text()).values():
        if any(r["sha256"] == sha256 for r in entry.get("releases", [])):
            return entry.get("config", {}).get("likelihood")
    return None


def _input_dim(module) -> int | None:
    """The dimension of a layer's weight that runs over its input channels."""
    import torch.nn as nn

    if isinstance(module, nn.ConvTranspose2d):
        return 0
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return 1
    return None


def _widen(w, target, in_dim: int | None, noise: float):
    """`w` grown to `target`: split along the input dimension, repeated along the others."""
    import torch

    if in_dim is not None and target[in_dim] != w.shape[in_dim]:
        k = target[in_dim] // w.shape[in_dim]
        jitter = torch.randn((k,) + tuple(w.shape), dtype=w.dtype) * (noise * float(w.std()) / k)
        parts = w / k + (jitter - jitter.mean(0))
        w = torch.cat(list(parts), in_dim)
    for dim, size in enumerate(target):
        if size != w.shape[dim]:
            w = torch.cat([w] * (size // w.shape[dim]), dim)
    return w
