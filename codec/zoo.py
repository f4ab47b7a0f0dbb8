"""Model registry: preset name -> model class, config, weights file and its sha256.

Weights are safetensors only (no pickles: a weights file can never run code) and are
checked against the sha256 in `weights/manifest.json` before they are loaded.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from codec.errors import NeurocodecError, WeightsError
from codec.files import sha256_file
from models.hyperprior import DEFAULT_LAMBDAS, MeanScaleHyperprior
from models.mlic import MLIC, MLIC_PRESETS

DEFAULT_IMAGE_MODEL = "mlic-medium-gaussian"

# the likelihood families each MLIC preset is registered with
MLIC_FAMILY_NAMES = {"gaussian": "Gaussian", "gg": "generalized-Gaussian",
                     "gmm": "Gaussian-mixture (K=3)", "mvgmm": "multivariate Gaussian-mixture (K=3, G=2)"}


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # "image" or "video"
    model_class: type
    config: dict = field(default_factory=dict)
    likelihood: str = "gaussian"
    description: str = ""

    @property
    def weights_file(self) -> str:
        return f"{self.name}.safetensors"

    def build(self) -> torch.nn.Module:
        return self.model_class(**self.config)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("hyperprior-small", "image", MeanScaleHyperprior, {"N": 64, "M": 128},
               description="Mean-scale hyperprior (Minnen 2018 without context), variable rate, "
                           "trained on this project's CPU"),
        Preset("hyperprior", "image", MeanScaleHyperprior, {"N": 128, "M": 192},
               description="Mean-scale hyperprior at the paper's size (N=128, M=192); no shipped weights"),
    ] + [
        # every MLIC preset with every likelihood family: "mlic-tiny-gaussian", "mlic++-mvgmm", ...
        Preset(f"{size}-{family}", "image", MLIC, {**MLIC_PRESETS[size], "likelihood": family},
               likelihood=family,
               description=f"MLIC-style multi-reference entropy model ({size}: N={cfg['N']}, M={cfg['M']}, "
                           f"{cfg['slices']} slices), {MLIC_FAMILY_NAMES[family]} likelihood, variable rate")
        for size, cfg in MLIC_PRESETS.items() for family in MLIC_FAMILY_NAMES
    ]
}


def weights_dir() -> Path:
    """`$NEUROCODEC_WEIGHTS`, else the repository's `weights/`, else the installed data dir."""
    if env := os.environ.get("NEUROCODEC_WEIGHTS"):
        return Path(env)
    in_repo = Path(__file__).resolve().parent.parent / "weights"
    if in_repo.is_dir():
        return in_repo
    return Path(sys.prefix) / "share" / "neurocodec" / "weights"


def manifest() -> dict:
    path = weights_dir() / "manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read {path}: {e}") from e


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise NeurocodecError(f"unknown model {name!r}; available: {', '.join(PRESETS)}") from None


def weights_sha256(name: str) -> str:
    """The sha256 the manifest records for a preset's weights; WeightsError if none shipped."""
    entry = manifest().get(name)
    path = weights_dir() / get_preset(name).weights_file
    if entry is None or not path.exists():
        raise WeightsError(f"no weights shipped for model {name!r} (expected {path} listed in manifest.json)")
    return entry["sha256"]


def list_models() -> list[dict]:
    """One entry per preset: name, kind, likelihood, whether weights are shipped, quality range."""
    shipped = manifest()
    out = []
    for p in PRESETS.values():
        has = p.name in shipped and (weights_dir() / p.weights_file).exists()
        levels = len(p.config.get("lambdas", DEFAULT_LAMBDAS)) if p.kind == "image" else None
        out.append({"name": p.name, "kind": p.kind, "likelihood": p.likelihood,
                    "weights_shipped": has, "default": p.name == DEFAULT_IMAGE_MODEL,
                    "qualities": [1.0, float(levels)] if levels else None,
                    "description": p.description})
    return out


@functools.lru_cache(maxsize=4)
def load_model(name: str) -> tuple[torch.nn.Module, str]:
    """The preset with its shipped weights, in eval mode, and the weights' sha256."""
    preset = get_preset(name)
    expected = weights_sha256(name)
    path = weights_dir() / preset.weights_file
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(f"weights file {path} is corrupted or replaced: sha256 {actual[:16]}... "
                           f"but manifest.json says {expected[:16]}...")
    return build_with_weights(name, path), actual


def build_with_weights(name: str, path: str | Path) -> torch.nn.Module:
    """The preset with the weights of a .safetensors file, in eval mode, without the manifest's
    sha256 check: for measuring weights that are not (or no longer) the shipped ones."""
    model = get_preset(name).build()
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    load_state(model, state)
    model.eval()
    return model


def load_state(model: torch.nn.Module, state: dict) -> None:
    """load_state_dict that first resizes the entropy models' CDF buffers (their size varies)."""
    buffers = dict(model.named_buffers())
    for key, value in state.items():
        if key in buffers and buffers[key].shape != value.shape and key.rsplit(".", 1)[-1].startswith("_"):
            buffers[key].resize_(value.shape)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"weights do not fit model {type(model).__name__}: {str(e).splitlines()[0]}") from e


@contextlib.contextmanager
def weights_from(folder: str | Path):
    """Use the weights (and manifest.json) in `folder` for a while, e.g. a run's validation
    exporting its current weights to a temporary folder; models loaded before or meanwhile
    are forgotten on entry and on exit."""
    before = os.environ.get("NEUROCODEC_WEIGHTS")
    os.environ["NEUROCODEC_WEIGHTS"] = str(folder)
    load_model.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("NEUROCODEC_WEIGHTS", None)
        else:
            os.environ["NEUROCODEC_WEIGHTS"] = before
        load_model.cache_clear()
