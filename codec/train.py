"""A simple, resumable CPU training loop for the variable-rate image models.

Why its own loop: training happens on a 2-core CPU across sessions, so what matters is
exact resume (model, optimizers, step, RNG) and checkpoints on a timer and on SIGTERM.
Checkpoints are pickled torch files in the run folder, never shipped; `export_weights`
writes the safetensors file that ships.
"""
from __future__ import annotations

import csv
import json
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class RandomPatches(torch.utils.data.IterableDataset):
    """Endless random patches: random image, random downscale, random crop and flip.

    JPEGs are downscaled by 2x or more so their compression artefacts vanish; lossless
    images by 1x to 2x. Only the cropped region is resized, so big photos stay cheap.
    """

    def __init__(self, folder: str | Path, crop: int, seed: int):
        self.paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"no training images (png/jpg/webp) under {folder}")
        self.crop, self.seed = crop, seed
        self.images = [Image.open(p).convert("RGB") for p in self.paths]
        for im in self.images:
            im.load()

    def __iter__(self):
        rng = random.Random(self.seed)
        while True:
            i = rng.randrange(len(self.images))
            im, path = self.images[i], self.paths[i]
            lossy = path.suffix.lower() in {".jpg", ".jpeg"}
            lo, hi = (2.0, 4.0) if lossy else (1.0, 2.0)
            hi = min(hi, min(im.size) / self.crop)
            if hi < lo:
                continue
            s = rng.uniform(lo, hi)
            side = int(round(self.crop * s))
            x0 = rng.randrange(im.width - side + 1)
            y0 = rng.randrange(im.height - side + 1)
            patch = im.resize((self.crop, self.crop), Image.Resampling.LANCZOS,
                              box=(x0, y0, x0 + side, y0 + side))
            if rng.random() < 0.5:
                patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            arr = np.asarray(patch, dtype=np.float32) / 255.0
            yield torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up, then constant, then a 10x drop for the last `decay_frac` of the run."""
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    if step >= cfg["steps"] * (1 - cfg["decay_frac"]):
        return cfg["lr"] * 0.1
    return cfg["lr"]


def train(run_dir: str | Path, cfg: dict, build_model, resume: bool = True,
          checkpoint_every_s: float = 300.0, max_minutes: float | None = None) -> Path:
    """Train `build_model(cfg)` with the RD loss over random qualities; returns the run dir."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    torch.set_num_threads(cfg.get("threads", 1))
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg)
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    opt = torch.optim.AdamW(main_params, lr=cfg["lr"], weight_decay=0.0)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    step, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step, elapsed = state["step"], state["elapsed"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed {run_dir} at step {step} ({elapsed / 3600:.2f} h)", flush=True)
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=1))

    data = iter(torch.utils.data.DataLoader(
        RandomPatches(cfg["data"], cfg["crop"], seed=cfg["seed"] + step),
        batch_size=cfg["batch"], num_workers=0))
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    def save():
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                    "step": step, "elapsed": elapsed, "torch_rng": torch.get_rng_state(), "config": cfg}, tmp)
        tmp.replace(ckpt_path)

    log_path = run_dir / "log.csv"
    new_log = not log_path.exists()
    with open(log_path, "a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "hours", "lr", "loss", "bpp", "psnr", "aux"])
        t_last_ckpt = time.time()
        t0 = time.time() - elapsed
        deadline = time.time() + max_minutes * 60 if max_minutes else math.inf
        bar = tqdm(total=cfg["steps"], initial=step, desc="train", dynamic_ncols=True)
        acc = []
        model.train()
        while step < cfg["steps"] and not stop["now"] and time.time() < deadline:
            x = next(data)
            quality = torch.rand(x.shape[0]) * (model.levels - 1) + 1
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.get("bf16", False)):
                out = model(x, quality)
            losses = model.rd_loss(x, quality, out)
            opt.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(main_params, cfg["clip"])
            opt.step()
            aux = model.aux_loss()
            aux_opt.zero_grad()
            aux.backward()
            aux_opt.step()
            step += 1
            elapsed = time.time() - t0
            acc.append((losses["loss"].item(), losses["bpp"].item(), losses["mse"].item(), aux.item()))
            bar.update(1)
            if step % cfg["log_every"] == 0:
                loss, bpp, mse, aux_v = np.mean(acc, axis=0)
                acc.clear()
                psnr = -10 * math.log10(max(mse, 1e-10))
                log.writerow([step, f"{elapsed / 3600:.4f}", f"{_lr_at(step, cfg):.2e}",
                              f"{loss:.4f}", f"{bpp:.4f}", f"{psnr:.3f}", f"{aux_v:.2f}"])
                log_file.flush()
                bar.set_postfix(loss=f"{loss:.3f}", bpp=f"{bpp:.3f}", psnr=f"{psnr:.2f}")
            if time.time() - t_last_ckpt > checkpoint_every_s:
                save()
                t_last_ckpt = time.time()
        bar.close()
    save()
    print(f"saved {ckpt_path} at step {step}", flush=True)
    return run_dir


def export_weights(run_dir: str | Path, preset_name: str, weights_dir: str | Path) -> dict:
    """Write a run's model as `<weights_dir>/<preset>.safetensors` and its manifest entry.

    The entropy bottleneck's quantized CDF tables are computed here, once, and shipped in the
    file, so encoder and decoder read identical tables instead of recomputing them in float.
    """
    from safetensors.torch import save_file

    from codec.zoo import file_sha256, get_preset, load_state

    run_dir, weights_dir = Path(run_dir), Path(weights_dir)
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    preset = get_preset(preset_name)
    model = preset.build()
    load_state(model, state["model"])
    model.entropy_bottleneck.update(force=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = weights_dir / preset.weights_file
    save_file(tensors, str(path))
    cfg = state["config"]
    entry = {"preset": preset_name, "file": path.name, "sha256": file_sha256(path),
             "config": preset.config, "lambdas": list(model.lambdas),
             "training": {"steps": state["step"], "hours": round(state["elapsed"] / 3600, 3),
                          "data": "shared/data/train (73 photos; JPEGs downscaled >= 2x)",
                          "settings": cfg}}
    manifest_path = weights_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[preset_name] = {**manifest.get(preset_name, {}), **entry}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest[preset_name]
