"""Shipping weights: a run's checkpoint exported as safetensors with its manifest.json entry
(config, sha256, training record, and the Kodak curve measured with exactly these weights)."""
from __future__ import annotations

import copy
import csv
import hashlib
import json
from pathlib import Path

from codec.files import write_atomic


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

    from codec.zoo import get_preset, release_file

    preset = get_preset(preset_name)
    folder = Path(folder)
    if folder.suffix == ".safetensors":
        raise ValueError(f"give the weights folder, not a file name: releases are named {preset_name}@<id>.safetensors")
    folder.mkdir(parents=True, exist_ok=True)  # a new folder for a release to try, as `-o` suggests
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
        write_atomic(folder / name, data)
    manifest[preset_name] = entry
    _write_manifest(manifest_path, manifest)
    return entry


def _write_manifest(path: Path, manifest: dict) -> None:
    write_atomic(path, (json.dumps(manifest, indent=1) + "\n").encode())


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
    model = get_preset(cfg["model"]).build(levels=cfg.get("levels"))
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
