"""`neurocodec train`: a resumable training loop for the variable-rate image models.

Why its own loop: training happens on a 2-core CPU across sessions, so what matters is exact
resume (model, optimizers, step, RNG, and data that depends only on the step), checkpoints
on a timer and on SIGTERM, validation with real files, and the same code scaling to GPUs
with `torchrun` (DistributedDataParallel, NCCL on GPUs, gloo on CPUs). Checkpoints are
pickled torch files in the run folder, never shipped; `export` writes the safetensors file
that ships. torch is imported inside the functions so `neurocodec --help` stays fast.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import json
import math
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). Without it, bfloat16
    autocast is emulated: 8x slower than float32 on an AVX2-only EPYC here
    (benchmarks/training_speed.py)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags

# Every setting of a run: (default, help). Saved with every checkpoint; `--resume` reuses
# the saved ones and only flags given explicitly override them.
SETTINGS: dict[str, tuple] = {
    "model": ("mlic-tiny-gaussian", "model preset to train (see `neurocodec models`)"),
    "init": (None, "start a new run from these weights (.safetensors): tensors whose name and shape "
                   "match the model are loaded, layers of a wider model are widened to the same "
                   "function, a Gaussian model's parameter heads are carried to the GG family as the same "
                   "law, the others keep their fresh initialization"),
    "data": (None, "folder of training images, searched recursively (PNG, JPEG, WebP)"),
    "val": (None, "folder of validation images (e.g. Kodak); none: no validation"),
    "val_count": (6, "validate on this many images, evenly spaced in the sorted folder"),
    "val_every": (2000, "validate every N steps (and at the end)"),
    "val_qualities": ([1.0, 3.0, 5.0, 8.0], "qualities to validate at"),
    "steps": (60000, "total training steps (the LR schedule depends on it)"),
    "batch": (4, "patches per step (per process)"),
    "crop": (256, "patch side in pixels"),
    "lr": (4e-4, "peak learning rate of AdamW"),
    "warmup": (1000, "linear LR warm-up steps"),
    "decay_frac": (0.15, "the LR drops 10x for this last fraction of the steps"),
    "clip": (1.0, "gradient norm clipping"),
    "seed": (1, "seed of the weights, the noise and the patches"),
    "threads": (2, "torch threads per process"),
    "bf16": (native_bf16(), "bfloat16 autocast for the forward pass (1.6x faster on CPUs with "
                            "AVX512-BF16, 8x slower without; the default says whether this CPU has it)"),
    "log_every": (50, "steps per row of log.csv"),
}
DEFAULTS = {k: v[0] for k, v in SETTINGS.items()}


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


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up, then constant, then a 10x drop for the last `decay_frac` of the run."""
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    if step >= cfg["steps"] * (1 - cfg["decay_frac"]):
        return cfg["lr"] * 0.1
    return cfg["lr"]


def _distributed():
    """(rank, world size, device), joining the process group when started by torchrun."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def train(run_dir: str | Path, cfg: dict, resume: bool = False, checkpoint_every_s: float = 300.0,
          max_minutes: float | None = None, stop_after: int | None = None):
    """Train the preset `cfg["model"]` with the RD loss over random qualities.

    Stops at `cfg["steps"]`, after `max_minutes`, at step `stop_after`, or on SIGTERM, always
    with a checkpoint; `resume=True` continues a run exactly where its checkpoint left it.
    Returns the model (in every process: DDP keeps them identical).
    """
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from codec.zoo import get_preset

    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it")
    rank, world, device = _distributed()
    main_process = rank == 0
    cfg = {**DEFAULTS, **cfg}
    if not cfg["data"]:
        raise ValueError("no training data: give --data FOLDER")
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    model = get_preset(cfg["model"]).build().to(device)
    aux_names = {n for n, _ in model.named_parameters() if n.endswith(".quantiles")}
    aux_params = [p for n, p in model.named_parameters() if n in aux_names]
    main_params = [p for n, p in model.named_parameters() if n not in aux_names]
    opt = torch.optim.AdamW(main_params, lr=cfg["lr"], weight_decay=0.0)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    torch.manual_seed(cfg["seed"] + rank)  # same initial weights everywhere, different noise per process
    step, elapsed = 0, 0.0
    if cfg["init"] and not ckpt_path.exists():
        loaded = init_from(model, cfg["init"])
        if main_process:
            print(f"initialized {len(loaded)} of {len(model.state_dict())} tensors from {cfg['init']}", flush=True)
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step, elapsed = state["step"], state["elapsed"]
        rng = state["torch_rng"]
        if isinstance(rng, list):
            rng = rng[rank] if len(rng) == world else None
        if rng is not None:
            torch.set_rng_state(rng)
        if main_process:
            print(f"resumed {run_dir} at step {step} ({elapsed / 3600:.2f} h)", flush=True)
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # the entropy bottleneck's quantiles learn from the aux loss only: reduced by hand below
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(aux_names))
        forward = DistributedDataParallel(model, find_unused_parameters=True)
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    data = RandomPatches(cfg["data"], cfg["crop"], cfg["seed"])
    validator = Validator(cfg, run_dir) if cfg["val"] and main_process else None
    stop = {"now": False}
    for sig in (signal.SIGTERM, signal.SIGINT):  # finish the step, checkpoint, exit
        signal.signal(sig, lambda *_: stop.update(now=True))

    def save():
        rng_states = torch.get_rng_state()
        if world > 1:
            rng_states = [None] * world
            dist.all_gather_object(rng_states, torch.get_rng_state())
        if not main_process:
            return
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                    "step": step, "elapsed": elapsed, "torch_rng": rng_states, "config": cfg}, tmp)
        tmp.replace(ckpt_path)

    def should_stop() -> bool:
        flag = stop["now"] or time.time() > deadline or step == stop_after
        if world > 1:  # every process stops at the same step
            t = torch.tensor([float(flag)], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    log = _Log(run_dir / "log.csv", ["step", "hours", "lr", "loss", "bpp", "psnr", "aux"]) if main_process else None
    t_last_ckpt = time.time()
    t0 = time.time() - elapsed
    deadline = time.time() + max_minutes * 60 if max_minutes else math.inf
    bar = tqdm(total=cfg["steps"], initial=step, desc="train", dynamic_ncols=True, disable=not main_process)
    acc = []
    model.train()
    while step < cfg["steps"] and not should_stop():
        x = torch.from_numpy(data.batch(step, cfg["batch"], rank)).to(device)
        quality = torch.rand(x.shape[0]) * (model.levels - 1) + 1
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["bf16"]):
            out = forward(x, quality.to(device))
        losses = model.rd_loss(x, quality.to(device), out)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(main_params, cfg["clip"])
        opt.step()
        aux = model.aux_loss()
        aux_opt.zero_grad()
        aux.backward()
        if world > 1:
            for p in aux_params:
                dist.all_reduce(p.grad)
                p.grad /= world
        aux_opt.step()
        step += 1
        elapsed = time.time() - t0
        acc.append((losses["loss"].item(), losses["bpp"].item(), losses["mse"].item(), aux.item()))
        bar.update(1)
        if main_process and step % cfg["log_every"] == 0:
            loss, bpp, mse, aux_v = np.mean(acc, axis=0)
            acc.clear()
            psnr = -10 * math.log10(max(mse, 1e-10))
            log.write([step, f"{elapsed / 3600:.4f}", f"{lr_at(step, cfg):.2e}", f"{loss:.4f}",
                       f"{bpp:.4f}", f"{psnr:.3f}", f"{aux_v:.2f}"])
            bar.set_postfix(loss=f"{loss:.3f}", bpp=f"{bpp:.3f}", psnr=f"{psnr:.2f}")
        if validator and (step % cfg["val_every"] == 0 or step == cfg["steps"]):
            bar.write(validator.run(model, step, elapsed))
        if time.time() - t_last_ckpt > checkpoint_every_s:
            save()
            t_last_ckpt = time.time()
    bar.close()
    save()
    if main_process:
        print(f"saved {ckpt_path} at step {step}", flush=True)
    return model


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
    (`model.from_gaussian`: GG with beta = 2), so the new family starts where the Gaussian
    training left off. Everything else keeps its fresh initialization. Buffers are not copied: shipped float16
    files hold the 1e-9 likelihood bounds as 0."""
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


def _likelihood_of(path: str | Path) -> str | None:
    """The likelihood family of a weights file, from the manifest.json beside it listing the
    file's sha256 among a model's releases (None if it does not say)."""
    manifest = Path(path).parent / "manifest.json"
    if not manifest.exists():
        return None
    sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
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


class _Log:
    """Append-only CSV with a header on creation, flushed per row (and TensorBoard if installed)."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        if not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(columns)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.tensorboard = None
        else:
            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, row: list) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(row)
        if self.tensorboard:
            tag = self.path.stem
            extra = f"/q{row[2]}" if tag == "val" else ""
            for name, value in zip(self.columns[1:], row[1:]):
                with contextlib.suppress(ValueError):
                    self.tensorboard.add_scalar(f"{tag}{extra}/{name}", float(value), int(row[0]))


class Validator:
    """Real files, not likelihoods: exports the current weights exactly as `export` would,
    then encodes and decodes the validation images through the public API; bpp is from the
    file sizes. Rows go to val.csv (step, hours, quality, bpp, psnr, images)."""

    def __init__(self, cfg: dict, run_dir: Path):
        paths = sorted(p for p in Path(cfg["val"]).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"no validation images under {cfg['val']}")
        count = min(cfg["val_count"], len(paths))
        self.paths = [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]
        self.preset, self.qualities = cfg["model"], cfg["val_qualities"]
        self.log = _Log(run_dir / "val.csv", ["step", "hours", "quality", "bpp", "psnr", "images"])

    def run(self, model, step: int, elapsed: float) -> str:
        import codec
        from codec.evaluate import psnr
        from codec.image import load_rgb

        rows = []
        with tempfile.TemporaryDirectory() as tmp, _weights_from(tmp):
            write_weights(model, self.preset, Path(tmp), "float16")
            for q in self.qualities:
                bpp, quality = [], []
                for path in self.paths:
                    rgb = load_rgb(path)
                    data = codec.encode_image(rgb, model=self.preset, quality=q)
                    bpp.append(len(data) * 8 / (rgb.shape[0] * rgb.shape[1]))
                    quality.append(psnr(rgb, codec.decode_image(data)))
                rows.append({"quality": q, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(quality))})
                self.log.write([step, f"{elapsed / 3600:.4f}", q, f"{rows[-1]['bpp']:.4f}",
                                f"{rows[-1]['psnr']:.3f}", len(self.paths)])
        return f"val @ {step}: " + ", ".join(f"q{r['quality']:g} {r['bpp']:.3f} bpp {r['psnr']:.2f} dB" for r in rows)


@contextlib.contextmanager
def _weights_from(folder: str):
    """Point the model zoo at `folder` for a while (and forget the models and the eval
    adapters, which record the weights' sha256, that were built before or meanwhile)."""
    from codec.eval_codecs import image_codec
    from codec.zoo import load_model

    before = os.environ.get("NEUROCODEC_WEIGHTS")
    os.environ["NEUROCODEC_WEIGHTS"] = folder
    load_model.cache_clear()
    image_codec.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("NEUROCODEC_WEIGHTS", None)
        else:
            os.environ["NEUROCODEC_WEIGHTS"] = before
        load_model.cache_clear()
        image_codec.cache_clear()


def write_weights(model, preset_name: str, folder: Path, dtype: str = "float16", extra: dict | None = None,
                  kodak_results: str | Path | None = None) -> dict:
    """Write a model's weights as a new release `folder/<preset>@<id>.safetensors` and make
    it the preset's newest release in `folder/manifest.json` (older releases stay listed).

    A release file is never rewritten: its name is its content's hash. The entropy
    bottleneck's quantized CDF tables are computed here, once, and shipped in the file, so
    encoder and decoder read identical tables instead of recomputing them. Float tensors are
    stored as `dtype` (but for the likelihood bounds); the codec computes in float32 from
    what is stored. `kodak_results`: an `eval images` JSON that measured exactly these
    weights; its curve goes into the entry (see `kodak_entry`).
    """
    import datetime

    import torch
    from safetensors.torch import save

    from codec import files
    from codec.zoo import get_preset, release_file

    preset = get_preset(preset_name)
    folder = Path(folder)
    if folder.suffix == ".safetensors":
        raise ValueError(f"give the weights folder, not a file name: releases are named {preset_name}@<id>.safetensors")
    model = copy.deepcopy(model).cpu().eval()
    model.entropy_bottleneck.update(force=True)
    cast = getattr(torch, dtype)
    # the likelihood bounds (1e-9) stay float32: float16 would store them as 0
    tensors = {k: (v.to(cast) if v.is_floating_point() and not k.endswith(".bound") else v).detach().contiguous()
               for k, v in model.state_dict().items()}
    data = save(tensors)
    sha256 = hashlib.sha256(data).hexdigest()
    name = release_file(preset_name, sha256)
    entry = {"preset": preset_name, "file": name, "sha256": sha256, "dtype": dtype,
             "config": preset.config, "lambdas": list(model.lambdas), **(extra or {})}
    if kodak_results is not None:  # checked before anything is written
        entry["kodak"] = kodak_entry(kodak_results, preset_name, entry["sha256"])
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    older = [r for r in manifest.get(preset_name, {}).get("releases", []) if r["sha256"] != sha256]
    release = {"release": f"{preset_name}@{sha256[:16]}", "sha256": sha256,
               "shipped": datetime.date.today().isoformat()}
    entry["releases"] = [release] + older
    if not (folder / name).exists():
        files.write_atomic(str(folder / name), data)
    manifest[preset_name] = entry
    _write_manifest(manifest_path, manifest)
    return entry


def _write_manifest(path: Path, manifest: dict) -> None:
    from codec import files

    files.write_atomic(str(path), (json.dumps(manifest, indent=1) + "\n").encode())


def kodak_entry(results_path: str | Path, preset_name: str, sha256: str) -> dict:
    """The measured curve of `neurocodec:<preset_name>` in an `eval images` JSON, for the
    manifest. Refused unless every point was measured with the weights of `sha256`, so a
    manifest never quotes results of other weights."""
    results = json.loads(Path(results_path).read_text())
    name = f"neurocodec:{preset_name}"
    found = [c for c in results.get("codecs", []) if c.get("name") == name]
    if not found:
        raise ValueError(f"{results_path} has no results of {name}")
    measured = found[0]
    others = {s.get("weights_sha256") for s in measured["settings"]} - {sha256}
    if others:
        raise ValueError(f"{results_path} measured {name} with other weights (sha256 "
                         f"{', '.join(sorted(str(o)[:16] for o in others))}...); rerun the evaluation")
    r = measured["results"]
    entry = {"command": results.get("command"), "images": len(results.get("images", [])),
             "quality": [s["quality"] for s in measured["settings"]],
             "bpp": [round(v, 4) for v in r["bpp"]], "psnr_rgb": [round(v, 3) for v in r["psnr-rgb"]],
             "ms_ssim": [round(v, 5) for v in r["ms-ssim"]]}
    bd = results.get("bd") or {}
    row = [x for x in bd.get("rows", []) if x["codec"] == name]
    if row:  # null: the curves do not overlap
        value = row[0]["bd_rate_psnr_pct"]
        entry[f"bd_rate_vs_{bd['anchor']}_pct"] = None if value is None else round(value, 2)
    return entry


def record_kodak(results_path: str | Path, weights_dir: str | Path) -> list[str]:
    """Refresh the `kodak` entry of every model in `weights_dir`'s manifest that the `eval
    images` JSON measured, for when the codec changed and the weights did not (a new coder
    version moves every curve). Each entry is checked against the model's sha256 before
    anything is written (`kodak_entry`). Returns the models updated."""
    manifest_path = Path(weights_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    measured = {c.get("name") for c in json.loads(Path(results_path).read_text()).get("codecs", [])}
    entries = {name: kodak_entry(results_path, name, entry["sha256"])
               for name, entry in manifest.items() if f"neurocodec:{name}" in measured}
    if not entries:
        raise ValueError(f"{results_path} measured none of the models in {manifest_path}")
    for name, kodak in entries.items():
        manifest[name]["kodak"] = kodak
    _write_manifest(manifest_path, manifest)
    return sorted(entries)


def export_weights(run_dir: str | Path, output: str | Path, dtype: str = "float16",
                   kodak_results: str | Path | None = None) -> dict:
    """Export a run's checkpoint as a new release in the weights folder `output` and its manifest entry:
    config, sha256, steps, wall-clock, data, settings, the last validation results and,
    given `kodak_results`, the Kodak curve measured with these weights."""
    import torch

    from codec.zoo import get_preset

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").exists():
        raise FileNotFoundError(f"no checkpoint.pt in {run_dir}")
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = state["config"]
    model = get_preset(cfg["model"]).build()
    model.load_state_dict(state["model"])
    training = {"steps": state["step"], "hours": round(state["elapsed"] / 3600, 3),
                "data": str(cfg["data"]), "settings": cfg}
    val_path = run_dir / "val.csv"
    rows = list(csv.DictReader(open(val_path))) if val_path.exists() else []
    if rows:
        last = [r for r in rows if int(r["step"]) == max(int(r["step"]) for r in rows)]
        training["validation"] = {"step": int(last[0]["step"]), "images": int(last[0]["images"]),
                                  "quality": [float(r["quality"]) for r in last],
                                  "bpp": [float(r["bpp"]) for r in last],
                                  "psnr": [float(r["psnr"]) for r in last]}
    return write_weights(model, cfg["model"], Path(output), dtype, {"training": training}, kodak_results)


# --------------------------------------------------------------------------- CLI


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add `train` (start or --resume a run) and `train export` to the CLI."""
    p = subparsers.add_parser(
        "train", help="train an image model (resumable), or export a run's weights",
        description="Train a variable-rate image model on a folder of photos. Checkpoints go to "
                    "RUN/checkpoint.pt every few minutes and on SIGTERM/Ctrl-C; --resume continues "
                    "exactly. Multi-process: torchrun --nproc_per_node N -m codec.cli train ...",
        epilog="Example:\n  neurocodec train --run runs/tiny --data ../shared/data/train "
               "--val ../shared/data/kodak\n  neurocodec train export runs/tiny -o weights/mlic-tiny-gaussian.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run folder (checkpoint, config.json, log.csv, val.csv)")
    p.add_argument("--config", help="JSON file of settings (flags given explicitly override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run exactly")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints (default 5)")
    g = p.add_argument_group("settings (saved with the run)")
    for key, (default, text) in SETTINGS.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"{text} (default {default})")
        elif isinstance(default, list):
            g.add_argument(flag, type=float, nargs="+", default=None, help=f"{text} (default {default})")
        else:
            kind = type(default) if default is not None else str
            g.add_argument(flag, type=kind, default=None, help=f"{text} (default {default})")
    sub = p.add_subparsers(dest="train_command", metavar="{export,record-kodak}")
    e = sub.add_parser("export", help="write a run's weights as safetensors with their manifest entry")
    e.add_argument("run_dir", help="run folder holding checkpoint.pt")
    e.add_argument("-o", "--output", required=True, help="weights folder (e.g. weights): the release is written there as <preset>@<id>.safetensors, never over an existing file, and becomes the preset's newest in its manifest.json")
    e.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored float type (default float16)")
    e.add_argument("--kodak", metavar="RESULTS_JSON",
                   help="an `eval images` JSON measured with these weights (export, evaluate, export again "
                        "with --kodak: the file is the same): its curve and BD-rate go into the manifest")
    r = sub.add_parser("record-kodak", help="put the Kodak curves of an evaluation of the shipped weights "
                                            "into their manifest entries (after a codec change)")
    r.add_argument("results", metavar="RESULTS_JSON", help="an `eval images` JSON")
    r.add_argument("-w", "--weights", default="weights", help="weights folder holding manifest.json (default weights)")
    p.set_defaults(func=_cmd_train)
    return p


def _cmd_train(args) -> int:
    if args.train_command == "record-kodak":
        print(f"updated the Kodak entries of {', '.join(record_kodak(args.results, args.weights))}")
        return 0
    if args.train_command == "export":
        entry = export_weights(args.run_dir, args.output, args.dtype, args.kodak)
        print(f"wrote release {entry['releases'][0]['release']} to {Path(args.output) / entry['file']} "
              f"({entry['training']['steps']} steps)")
        return 0
    if not args.run:
        raise ValueError("give --run FOLDER (or `train export RUN -o WEIGHTS_DIR`)")
    cfg = {}
    saved = Path(args.run) / "config.json"
    if args.resume and saved.exists():
        cfg.update(json.loads(saved.read_text()))
    if args.config:
        cfg.update(json.loads(Path(args.config).read_text()))
    cfg.update({k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None})
    unknown = set(cfg) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    train(args.run, cfg, resume=args.resume, checkpoint_every_s=args.checkpoint_minutes * 60,
          max_minutes=args.max_minutes)
    return 0
