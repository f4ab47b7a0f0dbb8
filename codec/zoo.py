"""Model registry: preset name -> model class and config; weight releases -> files.

A weight release is one immutable weights file of a preset, named `MODEL@ID` where ID is
the first 16 hex digits of the file's sha256 (the hash every `.ncf` file records). A name
without `@ID` means the preset's newest release. `weights/manifest.json` lists, per preset,
the newest release's metadata and every release ever shipped (`releases`, newest first):
installed ones by file name, older ones by the commit whose tree still holds them, from
which `install_release` restores them. Weights are safetensors only (no pickles: a
weights file can never run code) and are checked against their sha256 before loading.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from codec.errors import NeurocodecError, WeightsError
from codec.files import sha256_file, write_atomic
from models.hyperprior import DEFAULT_LAMBDAS, LAMBDA_LADDER, MeanScaleHyperprior
from models.mlic import MLIC, MLIC_PRESETS

DEFAULT_IMAGE_MODEL = "mlic-medium-gmm"

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

    def build(self, levels: int | None = None) -> torch.nn.Module:
        """The model; `levels`: an image model's quality levels (the first of LAMBDA_LADDER),
        default the preset's own."""
        if levels is None:
            return self.model_class(**self.config)
        if self.kind != "image" or not 1 <= levels <= len(LAMBDA_LADDER):
            raise ValueError(f"{self.name}: quality levels must be 1..{len(LAMBDA_LADDER)} for an image model, not {levels}")
        return self.model_class(**self.config, lambdas=LAMBDA_LADDER[:levels])


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


RELEASE_ID = re.compile(r"[0-9a-f]{16}")


def release_file(model: str, sha256: str) -> str:
    """The file name of a release: `MODEL@ID.safetensors`."""
    return f"{model}@{sha256[:16]}.safetensors"


def split_release(name: str) -> tuple[str, str | None]:
    """`MODEL` -> (MODEL, None); `MODEL@ID` -> (MODEL, ID); NeurocodecError if malformed."""
    model, at, release_id = name.partition("@")
    if at and not RELEASE_ID.fullmatch(release_id):
        raise NeurocodecError(f"malformed weights release {name!r}: expected MODEL@ID, ID = 16 lowercase hex digits")
    get_preset(model)
    return model, release_id or None


def releases(model: str) -> list[dict]:
    """Every release of `model` ever shipped, newest first: {release, sha256, shipped,
    installed (its file is in weights_dir()), and for releases shipped before releases were
    kept as files, the commit + path that hold them in the repository's history}."""
    entry = manifest().get(model)
    return [{**r, "installed": (weights_dir() / release_file(model, r["sha256"])).exists()}
            for r in (entry or {}).get("releases", [])]


def find_release(name: str) -> dict:
    """The release `name` (`MODEL` or `MODEL@ID`) stands for, installed and listed;
    WeightsError naming it, and where it comes from, otherwise."""
    model, release_id = split_release(name)
    known = releases(model)
    if not known:
        raise WeightsError(f"no weights shipped for model {model!r} (manifest.json in {weights_dir()} lists none)")
    found = [r for r in known if r["sha256"].startswith(release_id)] if release_id else known[:1]
    if not found:
        raise WeightsError(f"unknown weights release {model}@{release_id}: no release of neurocodec shipped it")
    release = found[0]
    if not release["installed"]:
        raise WeightsError(f"weights release {release['release']} is not installed: {_where(release)}")
    return release


def _where(release: dict) -> str:
    if "commit" in release:
        return (f"it was shipped as {release['path']} in commit {release['commit'][:12]} ({release['shipped']}); "
                f"run `neurocodec models install {release['release']}` in a git clone of neurocodec")
    return f"reinstall neurocodec to get {release_file(*release['release'].split('@'))}"


def weights_sha256(name: str) -> str:
    """The sha256 of the release `name` stands for; WeightsError if it is not installed."""
    return find_release(name)["sha256"]


def list_models() -> list[dict]:
    """One entry per preset: name, kind, likelihood, whether weights are shipped, quality range
    (the residual layer's qualities included), and its releases (newest first) with whether each
    is installed."""
    from codec.image import CODER_VERSION, residual  # codec.image imports this module

    out, shipped = [], manifest()
    for p in PRESETS.values():
        rel = releases(p.name)
        levels = len(shipped.get(p.name, {}).get("lambdas", DEFAULT_LAMBDAS)) if p.kind == "image" else None
        out.append({"name": p.name, "kind": p.kind, "likelihood": p.likelihood,
                    "weights_shipped": bool(rel) and rel[0]["installed"], "default": p.name == DEFAULT_IMAGE_MODEL,
                    "qualities": [1.0, residual.max_quality(levels, CODER_VERSION)] if levels else None,
                    "description": p.description, "releases": rel})
    return out


def install_release(name: str, repository: str | Path | None = None) -> Path:
    """Restore an older release into weights_dir() from the git history of `repository`
    (default: the checkout this code runs from), checked against its sha256. Written
    atomically; an installed release is left as it is."""
    model, release_id = split_release(name)
    if release_id is None:
        raise NeurocodecError(f"name the release to install as MODEL@ID (see `neurocodec models --all`), not {name!r}")
    found = [r for r in releases(model) if r["sha256"].startswith(release_id)]
    if not found:
        raise WeightsError(f"unknown weights release {name}: no release of neurocodec shipped it")
    release = found[0]
    target = weights_dir() / release_file(model, release["sha256"])
    if target.exists() and sha256_file(target) == release["sha256"]:
        return target
    if "commit" not in release:
        raise WeightsError(f"weights release {name} is not in the repository's history: {_where(release)}")
    repository = Path(repository or Path(__file__).resolve().parent.parent)
    got = subprocess.run(["git", "-C", str(repository), "show", f"{release['commit']}:{release['path']}"],
                         capture_output=True)
    if got.returncode != 0:
        raise WeightsError(f"cannot read {release['path']} at commit {release['commit'][:12]} from {repository} "
                           f"(a git clone of neurocodec is needed): {got.stderr.decode().strip()}")
    if hashlib.sha256(got.stdout).hexdigest() != release["sha256"]:
        raise WeightsError(f"{release['path']} at commit {release['commit'][:12]} is not release {name}")
    write_atomic(str(target), got.stdout)
    return target


@functools.lru_cache(maxsize=4)
def load_model(name: str) -> tuple[torch.nn.Module, str]:
    """The preset with the weights of release `name` (`MODEL`: its newest; `MODEL@ID`), in
    eval mode, and the weights' sha256. A file that does not match its release is refused."""
    release = find_release(name)
    path = weights_dir() / release_file(*release["release"].split("@"))
    actual = sha256_file(path)
    if actual != release["sha256"]:
        raise WeightsError(f"weights file {path} is corrupted or replaced: sha256 {actual[:16]}... "
                           f"but release {release['release']} is {release['sha256'][:16]}...")
    return build_with_weights(split_release(name)[0], path), actual


def build_with_weights(name: str, path: str | Path) -> torch.nn.Module:
    """The preset with the weights of a .safetensors file, in eval mode, without the manifest's
    sha256 check: for measuring weights that are not (or no longer) the shipped ones."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    gains = state.get("gain.log_gain")  # one row per quality level the weights were trained for
    try:
        model = get_preset(name).build(levels=None if gains is None else gains.shape[0])
    except ValueError as e:
        raise WeightsError(f"weights {path} do not fit {name}: {e}") from e
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
