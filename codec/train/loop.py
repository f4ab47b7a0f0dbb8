"""`neurocodec train`: a resumable training loop for the variable-rate image models.

Why its own loop: training runs on a 2-core CPU in pieces that are stopped and resumed, so what matters is exact
resume (model, optimizers, step, RNG, and data that depends only on the step), checkpoints
on a timer and on SIGTERM, validation with real files, and the same code scaling to GPUs
with `torchrun` (DistributedDataParallel, NCCL on GPUs, gloo on CPUs). Checkpoints are
pickled torch files in the run folder, never shipped; `codec.train.export` writes the
safetensors file that ships. torch is imported inside the functions so `neurocodec --help` stays fast.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from codec.files import write_atomic_with
from codec.train.data import IMAGE_SUFFIXES, RandomPatches, patch_batches
from codec.train.export import write_weights
from codec.train.warmstart import init_from


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
    "levels": (8, "quality levels: the model is trained for the first N trade-offs of the lambda "
                  "ladder (8: 0.0018 ... 0.18; 11 goes on to 1.3 for the highest qualities)"),
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
    "device": ("auto", "cuda, cpu, or auto (CUDA where torch sees a GPU)"),
    "loaders": (0, "processes that cut the patches ahead of the training step (0: the training process "
                   "itself); a GPU needs several to be kept busy; the batches are the same either way"),
    "bf16": (native_bf16(), "bfloat16 autocast for the forward pass (1.6x faster on CPUs with "
                            "AVX512-BF16, 8x slower without; the default says whether this CPU has it)"),
    "log_every": (50, "steps per row of log.csv"),
    "train_only": (None, "`entropy`: train the entropy model alone (hyper networks, contexts, parameter heads) "
                         "on the rate, the transforms, gains and latent residual prediction frozen, so the "
                         "reconstruction stays put; a step costs a third of a full one (MLIC models)"),
}
DEFAULTS = {k: v[0] for k, v in SETTINGS.items()}


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up, then constant, then a 10x drop for the last `decay_frac` of the run."""
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    if step >= cfg["steps"] * (1 - cfg["decay_frac"]):
        return cfg["lr"] * 0.1
    return cfg["lr"]


def freeze_for(model, train_only: str | None) -> bool:
    """Freeze what `train_only` leaves out; whether the steps are rate-only passes."""
    if train_only is None:
        return False
    if train_only != "entropy":
        raise ValueError(f"--train-only takes entropy, not {train_only!r}")
    if not hasattr(model, "RECONSTRUCTION"):
        raise ValueError(f"--train-only entropy needs an MLIC model, not {type(model).__name__}")
    for name in model.RECONSTRUCTION:
        getattr(model, name).requires_grad_(False)
    return True


def _distributed(device_setting: str = "auto"):
    """(rank, world size, device), joining the process group when started by torchrun."""
    import torch
    import torch.distributed as dist

    if device_setting not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {device_setting!r}")
    if device_setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here")
    cuda = device_setting != "cpu" and torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if cuda:
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
    cfg = {**DEFAULTS, **cfg}
    rank, world, device = _distributed(cfg["device"])
    main_process = rank == 0
    if not cfg["data"]:
        raise ValueError("no training data: give --data FOLDER")
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    model = get_preset(cfg["model"]).build(levels=cfg["levels"]).to(device)
    rate_only = freeze_for(model, cfg["train_only"])
    aux_names = {n for n, _ in model.named_parameters() if n.endswith(".quantiles")}
    aux_params = [p for n, p in model.named_parameters() if n in aux_names]
    main_params = [p for n, p in model.named_parameters() if n not in aux_names and p.requires_grad]
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
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                 "step": step, "elapsed": elapsed, "torch_rng": rng_states, "config": cfg}
        write_atomic_with(ckpt_path, lambda tmp: torch.save(state, tmp))

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
    batches = iter(patch_batches(data, step, cfg["steps"], cfg["batch"], rank, cfg["loaders"]))
    while step < cfg["steps"] and not should_stop():
        x = next(batches).to(device, non_blocking=True)
        quality = torch.rand(x.shape[0]) * (model.levels - 1) + 1
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["bf16"]):
            out = forward(x, quality.to(device), rate_only=True) if rate_only else forward(x, quality.to(device))
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
    then encodes and decodes the validation images through the public API, on the run's
    `threads` (the same files on any count); bpp is from the file sizes. Rows go to val.csv
    (step, hours, quality, bpp, psnr, images)."""

    def __init__(self, cfg: dict, run_dir: Path):
        paths = sorted(p for p in Path(cfg["val"]).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"no validation images under {cfg['val']}")
        count = min(cfg["val_count"], len(paths))
        self.paths = [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]
        self.preset, self.qualities, self.threads = cfg["model"], cfg["val_qualities"], cfg["threads"]
        self.log = _Log(run_dir / "val.csv", ["step", "hours", "quality", "bpp", "psnr", "images"])

    def run(self, model, step: int, elapsed: float) -> str:
        import codec
        from codec.eval.metrics import psnr
        from codec.image import load_rgb
        from codec.zoo import weights_from

        rows = []
        with tempfile.TemporaryDirectory() as tmp, weights_from(tmp):
            write_weights(model, self.preset, Path(tmp), "float16")
            for q in self.qualities:
                bpp, quality = [], []
                for path in self.paths:
                    rgb = load_rgb(path)
                    data = codec.encode_image(rgb, model=self.preset, quality=q, threads=self.threads,
                                              residual_layer=False)  # the learned layer's own rate points
                    bpp.append(len(data) * 8 / (rgb.shape[0] * rgb.shape[1]))
                    quality.append(psnr(rgb, codec.decode_image(data, threads=self.threads)))
                rows.append({"quality": q, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(quality))})
                self.log.write([step, f"{elapsed / 3600:.4f}", q, f"{rows[-1]['bpp']:.4f}",
                                f"{rows[-1]['psnr']:.3f}", len(self.paths)])
        return f"val @ {step}: " + ", ".join(f"q{r['quality']:g} {r['bpp']:.3f} bpp {r['psnr']:.2f} dB" for r in rows)
