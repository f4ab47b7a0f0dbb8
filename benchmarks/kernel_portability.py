"""Do .ncf files decode on CPUs other than the encoder's? PyTorch, MKL and oneDNN pick their
SIMD kernels per CPU (AVX512, AVX2, none); ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS and
ONEDNN_MAX_CPU_ISA force a set, so one machine can stand in for others. Every kernel set
encodes every (model, image, quality) in its own process and decodes its own files (the
reference pixels); every other set then decodes them. The table counts the files that fail
to decode and those that decode to other pixels (allowed: the synthesis is float32).

    python benchmarks/kernel_portability.py --models mlic-medium-gaussian,hyperprior-small \\
        --images ../shared/data/kodak --qualities 1,4,8

Then, for the first image and quality of each model, how far the coder's parameters move
between kernel sets when the networks see identical inputs (y and z of the native encoder):
the sum over all parameters of |difference| in units of the coder's grid (1/65536 for
means, 1/256 octave for scales) is the expected number of parameter codes that land on the
other side of a grid boundary, i.e. of files that fail, per file. It is computed for
float32 (coder version 1) and float64 (versions 2 and 3) parameter networks.

Last, the parameter codes themselves (`--parts codes`): every kernel set, with 1, 2 and 3
threads, computes the coder's parameter codes of each image (y and z of the native encoder,
every step fed back the values its own codes give, as a decoder would) along each route:
coder versions 1 (float32 PyTorch) and 3 (float64 PyTorch) as the codec runs them (one
thread), version 3 unpinned (torch on that many threads), version 4 (codec.exact) and
version 7 (codec.exact for Gaussian mixtures too); the table counts the codes that differ from
the first kernel set's on one thread. Version 4 (Gaussian models) and 7 must count 0.

    python benchmarks/kernel_portability.py --parts codes --images ../shared/data/kodak

Result (docs/reliability.md): coder-version-1 files (float32 parameter networks) failed on
every other kernel set; files of coder versions 2 and 3 (float64) are the ones the drift
counts; version 4's codes are the same bits on every kernel set and thread count.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from codec.zoo import DEFAULT_IMAGE_MODEL

ROOT = Path(__file__).resolve().parent.parent
ENV_KEYS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "NEUROCODEC_EXACT_ISA")
KERNEL_SETS = {  # name -> the ENV_KEYS values (ATen, MKL, oneDNN, codec.exact); "native": what this CPU picks
    "native": (None, None, None, None),
    "avx512": ("avx512", "AVX512", "AVX512_CORE", None),
    "avx2": ("avx2", "AVX2", "AVX2", None),
    "default": ("default", "SSE4_2", "SSE41", "baseline"),
}
THREADS = (1, 2, 3)
ROUTES = {"v1": "version 1 (float32 PyTorch, one thread)", "v3": "version 3 (float64 PyTorch, one thread)",
          "v3-threads": "the same on n threads", "v4": "version 4 (codec.exact)",
          "v7": "version 7 (codec.exact, Gaussian mixtures too)"}


def kernel_env(kernels: str) -> dict:
    """os.environ with the kernel set `kernels` forced."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update({key: value for key, value in zip(ENV_KEYS, KERNEL_SETS[kernels]) if value})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env  # with this checkout's codec first, also where another is installed


def available_kernel_sets() -> list[str]:
    """The sets this CPU can run: avx512 only where /proc/cpuinfo lists avx512f."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return [k for k in KERNEL_SETS if k != "avx512" or " avx512f" in flags]


def _run_worker(kernels: str, jobs: list, out_dir: Path) -> None:
    """One process with the kernel set forced: encode (when a job has no .ncf yet) and decode."""
    jobs_file = out_dir / f"jobs-{kernels}.json"
    jobs_file.write_text(json.dumps(jobs))
    subprocess.run([sys.executable, __file__, "--worker", str(jobs_file)], env=kernel_env(kernels), cwd=ROOT,
                   check=True)


def _drift_inputs(model: str, image, quality: float, path: Path) -> None:
    """y and z_hat of the native encoder, the inputs every kernel set's networks get (`image`:
    a path or an RGB array)."""
    from codec.image.pixels import load_rgb, to_tensor
    from codec.threads import torch_threads
    from codec.zoo import load_model
    net, _ = load_model(model)
    with torch.no_grad(), torch_threads(1, onednn=True):
        y = net.analysis(to_tensor(load_rgb(image), net.stride), torch.tensor([quality]))
        z = net.hyper_analysis(y)
    medians = net.z_medians().view(1, -1, 1, 1)
    np.savez(path, y=y.numpy(), z_hat=(torch.round(z - medians) + medians).numpy())


def _grid_units(params: dict) -> np.ndarray:
    from codec import entropy
    return np.concatenate([np.ravel(params["mean"]) * entropy._MEAN_ONE,
                           np.log2(np.ravel(params["scale"])) * entropy._SCALE_STEPS])


def _drift_worker(job: dict) -> None:
    """The raw (unsnapped) parameters of every coding step, in float32 and float64."""
    from codec.image import pipeline, ycoding
    from codec.threads import torch_threads
    from codec.zoo import load_model
    net, _ = load_model(job["model"])
    inputs = np.load(job["inputs"])
    snap, seen = ycoding.snap, []

    def recording_snap(family, residual, params, *exact_grid):
        seen.append(_grid_units(params))
        return snap(family, residual, params, *exact_grid)

    ycoding.snap = recording_snap
    out = {}
    one_version_per_dtype = {torch.float32: 1, torch.float64: 3}  # the PyTorch routes
    for dtype, version in one_version_per_dtype.items():
        seen.clear()
        param_net = pipeline.parameter_net(net, version)
        with torch.no_grad(), torch_threads(1, onednn=False):
            ycoding.quantize_y(param_net, torch.from_numpy(inputs["y"]),
                               torch.from_numpy(inputs["z_hat"]).to(dtype), torch.tensor([job["quality"]]),
                               mixture_residuals=True)
        out[str(dtype)] = np.concatenate(seen).astype(np.float64)
    np.savez(job["out"], **out)
    ycoding.snap = snap


def _codes_worker(job: dict) -> None:
    """The parameter codes of every coding step along each route, concatenated, on job["threads"]."""
    from codec.image import pipeline, ycoding
    from codec.threads import torch_threads
    from codec.zoo import load_model
    net, _ = load_model(job["model"])
    inputs = np.load(job["inputs"])
    out = {}
    for route in job["routes"]:
        version = int(route[1])
        param_net = pipeline.parameter_net(net, version)
        torch.set_num_threads(job["threads"])
        pin = contextlib.nullcontext() if route == "v3-threads" else torch_threads(1, onednn=False)
        with torch.no_grad(), pin:
            streams, _ = ycoding.quantize_y(param_net, torch.from_numpy(inputs["y"]),
                                            torch.from_numpy(inputs["z_hat"]).to(pipeline.PARAMETER_DTYPES[version]),
                                            torch.tensor([job["quality"]]),
                                            pipeline.mixture_residuals(param_net, version))
        out[route] = np.concatenate([np.ravel(c) for s in streams for c in s.codes.values()])
    np.savez(job["out"], **out)


def differing_codes(models: list[str], images: list, quality: float, kernels: list[str], threads=THREADS,
                    routes=tuple(ROUTES)) -> dict:
    """{(model, route, kernel set, threads): codes that differ from kernels[0] on 1 thread,
    summed over the images (paths or RGB arrays)}, and {model: codes per route} under "total"."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for m in models:
            for i, img in enumerate(images):
                _drift_inputs(m, img, quality, tmp / f"{m}-{i}-inputs.npz")
        for k in kernels:
            jobs = [{"codes": True, "model": m, "quality": quality, "threads": t, "routes": list(routes),
                     "inputs": str(tmp / f"{m}-{i}-inputs.npz"), "out": str(tmp / f"{m}-{i}-{k}-{t}-codes.npz")}
                    for m in models for i in range(len(images)) for t in threads]
            _run_worker(k, jobs, tmp)
        counts, total = {}, {m: 0 for m in models}
        for m in models:
            for i in range(len(images)):
                ref = np.load(tmp / f"{m}-{i}-{kernels[0]}-1-codes.npz")
                total[m] += ref[routes[0]].size
                for k in kernels:
                    for t in threads:
                        other = np.load(tmp / f"{m}-{i}-{k}-{t}-codes.npz")
                        for route in routes:
                            key = (m, route, k, t)
                            counts[key] = counts.get(key, 0) + int(np.sum(other[route] != ref[route]))
        counts["total"] = total
        return counts


def _worker(jobs_file: str) -> None:
    import codec
    from codec.image import load_rgb
    for job in json.loads(Path(jobs_file).read_text()):
        if "codes" in job:
            _codes_worker(job)
            continue
        if "inputs" in job:
            _drift_worker(job)
            continue
        ncf = Path(job["ncf"])
        if not ncf.exists():
            ncf.write_bytes(codec.encode_image(load_rgb(job["image"]), model=job["model"], quality=job["quality"]))
        try:
            np.save(job["pixels"], codec.decode_image(ncf.read_bytes()))
        except (codec.NcfError, codec.NeurocodecError) as e:
            Path(job["pixels"]).with_suffix(".err").write_text(str(e))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_IMAGE_MODEL, help="comma-separated presets")
    ap.add_argument("--images", default=str(ROOT / "examples/kodim23.png"), help="an image or a folder of PNGs")
    ap.add_argument("--qualities", default="4", help="comma-separated qualities")
    ap.add_argument("--kernels", default=",".join(available_kernel_sets()),
                    help=f"comma-separated, of {list(KERNEL_SETS)} (default: those this CPU runs)")
    ap.add_argument("--parts", default="files,drift,codes", help="comma-separated, of files, drift, codes")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker)
    images = sorted(Path(args.images).glob("*.png")) if Path(args.images).is_dir() else [Path(args.images)]
    kernels, parts, models = args.kernels.split(","), args.parts.split(","), args.models.split(",")
    if "codes" in parts:
        quality = float(args.qualities.split(",")[0])
        counts = differing_codes(models, images, quality, kernels)
        print(f"parameter codes that differ from the {kernels[0]} kernels' on one thread, {len(images)} image(s) "
              f"at quality {quality:g}; columns: kernel set / threads")
        for m in models:
            print(f"\n{m} ({counts['total'][m]:,} codes per route)\n{'':12s}"
                  + "".join(f"{f'{k}/{t}':>12s}" for k in kernels for t in THREADS))
            for route, what in ROUTES.items():
                print(f"{route:12s}" + "".join(f"{counts[(m, route, k, t)]:>12d}" for k in kernels for t in THREADS)
                      + f"   {what}")
    if "files" not in parts and "drift" not in parts:
        return
    files = [(m, img, float(q)) for m in args.models.split(",") for img in images for q in args.qualities.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def job(enc, dec, i, m, img, q):
            return {"model": m, "image": str(img.resolve()), "quality": q, "ncf": str(tmp / f"{enc}-{i}.ncf"),
                    "pixels": str(tmp / f"{enc}-{i}-by-{dec}.npy")}

        if "files" in parts:
            for k in kernels:  # encode and decode own files
                _run_worker(k, [job(k, k, i, *f) for i, f in enumerate(files)], tmp)
            for dec in kernels:  # decode the other sets' files
                _run_worker(dec, [job(enc, dec, i, *f) for enc in kernels if enc != dec
                                  for i, f in enumerate(files)], tmp)
            print(f"{len(images)} image(s) x qualities {args.qualities}; rows: encoder kernels, "
                  f"columns: decoder kernels; 'fail' = files that do not decode, 'px' = other pixels")
            for m in args.models.split(","):
                idx = [i for i, f in enumerate(files) if f[0] == m]
                print(f"\n{m} ({len(idx)} files)\n{'':10s}" + "".join(f"{d:>18s}" for d in kernels))
                for enc in kernels:
                    row = f"{enc:10s}"
                    for dec in kernels:
                        fail = px = 0
                        for i in idx:
                            base = tmp / f"{enc}-{i}-by-{dec}.npy"
                            if base.with_suffix(".err").exists():
                                fail += 1
                            elif not np.array_equal(np.load(base), np.load(tmp / f"{enc}-{i}-by-{enc}.npy")):
                                px += 1
                        row += f"{f'fail {fail} px {px}':>18s}"
                    print(row)

        if "drift" in parts:
            print(f"expected parameter codes that differ from the {kernels[0]} kernels' per file "
                  f"({images[0].name}, quality {files[0][2]:g}; sum of |difference| in grid units)")
            drift = [{"model": m, "quality": files[0][2], "inputs": str(tmp / f"{m}-inputs.npz"),
                      "out": str(tmp / f"{m}-{k}-drift.npz")} for m in args.models.split(",") for k in kernels]
            for m in args.models.split(","):
                _drift_inputs(m, images[0], files[0][2], tmp / f"{m}-inputs.npz")
            for k in kernels:
                _run_worker(k, [d for d in drift if d["out"].endswith(f"-{k}-drift.npz")], tmp)
            for m in args.models.split(","):
                native = np.load(tmp / f"{m}-{kernels[0]}-drift.npz")
                for k in kernels[1:]:
                    other = np.load(tmp / f"{m}-{k}-drift.npz")
                    cells = [f"{dtype}: {np.abs(other[dtype] - native[dtype]).sum():.3g} "
                             f"(max {np.abs(other[dtype] - native[dtype]).max():.2g} of {native[dtype].size:,})"
                             for dtype in native.files]
                    print(f"{m:22s} {kernels[0]} vs {k:8s} " + ",  ".join(cells))


if __name__ == "__main__":
    main()
