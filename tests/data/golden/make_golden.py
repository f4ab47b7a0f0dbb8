"""Golden .ncf files: writes those of the current coder version and records golden.json entries.

    python tests/data/golden/make_golden.py
    python tests/data/golden/make_golden.py --record v2-....ncf --commit C --box L U R B --made-with "..."

The first form encodes, for every weights release shipped as a file (`installed_releases`)
that has no golden file of the current coder version yet, the crops of `CURRENT_CROPS` (one
per quality) and records each file.
The second records a file that an older checkout wrote: coder versions 1 and 2 are NOT
re-created by this script (today's encoder writes only the current version, and a file patched
into an old layout would prove nothing); they were encoded by the CLI of the last commit that
wrote each version, and each entry's "made_with" says how. Golden files and their entries are
never rewritten: a golden file is what a past release wrote, and the test
(tests/test_golden.py) checks that every later release still reads it.

Each entry records what the test checks: the header fields, the source crop (a box of
`examples/kodim23.png`, with the sha256 of its RGB bytes), the sha256 of the decoded RGB bytes
with the kernel set (`kernel_set()`) they were decoded with, and the PSNR against the crop.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

GOLDEN = Path(__file__).resolve().parent
ROOT = GOLDEN.parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's codec, not an installed one

import codec  # noqa: E402

MANIFEST = GOLDEN / "golden.json"
SOURCE_IMAGE = "examples/kodim23.png"
# (quality, crop box) of the files written for each release at the current coder version:
# the green macaw's eye (128x96) at a low quality, the red macaw's eye (112x80) at a high one
CURRENT_CROPS = [(2.0, (128, 160, 256, 256)), (6.5, (432, 148, 544, 228))]


def installed_releases() -> list[tuple[str, str]]:
    """(model name, weights hash as a file records it: 16 hex digits) of every image weights
    release this checkout ships as a file. Releases from before releases were kept as files,
    restorable from git history (`neurocodec models install`, they have a "commit"), are left
    out even where installed: a golden file must decode in a fresh clone."""
    return [(m["name"], r["sha256"][:16]) for m in codec.list_models() if m["kind"] == "image"
            for r in m["releases"] if r["installed"] and "commit" not in r]


def kernel_set() -> dict:
    """What decides the float kernels the synthesis transform runs on: PyTorch's version and
    the SIMD kernel set it picked for this CPU (AVX512, AVX2, DEFAULT...)."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def source_pixels(source: dict) -> np.ndarray:
    """The crop a golden file was encoded from, as HxWx3 uint8 RGB."""
    with Image.open(ROOT / source["image"]) as im:
        return np.asarray(im.convert("RGB").crop(tuple(source["box"])))


def sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def record(name: str, commit: str, box: tuple[int, int, int, int], made_with: str) -> dict:
    """The manifest entry of golden file `name`, decoded here and now."""
    data = (GOLDEN / name).read_bytes()
    info = codec.read_info(data)
    source = {"image": SOURCE_IMAGE, "box": list(box)}
    original = source_pixels(source)
    decoded = codec.decode_image(data)
    return {
        "coder_version": info["coder"]["version"], "model": info["model"],
        "weights_hash": info["weights_hash"], "quality": info["quality"], "bytes": len(data),
        "commit": subprocess.check_output(["git", "rev-parse", commit], cwd=ROOT, text=True).strip(),
        "made_with": made_with,
        "source": {**source, "rgb_sha256": sha256(original)},
        "decoded": {"rgb_sha256": sha256(decoded), **kernel_set(), "psnr": round(codec.psnr(decoded, original), 4)},
    }


def add(manifest: dict, name: str, entry: dict) -> None:
    if name in manifest:
        sys.exit(f"{name} is already recorded: golden files are never rewritten")
    manifest[name] = entry
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    print(f"{name}: {entry['bytes']} bytes, {entry['decoded']['psnr']} dB")


def write_current(manifest: dict) -> None:
    """Golden files of the current coder version for every release that lacks them."""
    from codec.image import CODER_VERSION

    dirty = subprocess.check_output(["git", "status", "--porcelain", "codec", "models"], cwd=ROOT, text=True)
    if dirty:
        sys.exit(f"codec/ or models/ has uncommitted changes; commit them first:\n{dirty}")
    done = {(e["coder_version"], e["model"], e["weights_hash"]) for e in manifest.values()}
    for model, weights in installed_releases():
        if (CODER_VERSION, model, weights) in done:
            continue
        for quality, box in CURRENT_CROPS:
            name = f"v{CODER_VERSION}-{model}-{weights[:8]}-q{quality:g}.ncf"
            crop = source_pixels({"image": SOURCE_IMAGE, "box": box})
            release = f"{model}@{weights}"  # that release, not the preset's newest
            (GOLDEN / name).write_bytes(codec.encode_image(crop, model=release, quality=quality))
            add(manifest, name, record(name, "HEAD", box, f"python tests/data/golden/make_golden.py "
                                                          f"(codec.encode_image of the crop, model={release!r}, "
                                                          f"quality={quality:g})"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", metavar="FILE", help="record a golden file an older checkout wrote")
    parser.add_argument("--commit", help="the commit whose code wrote it")
    parser.add_argument("--box", type=int, nargs=4, metavar=("L", "U", "R", "B"), help="its crop of " + SOURCE_IMAGE)
    parser.add_argument("--made-with", help="the command that wrote it")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    manifest = load_manifest()
    if args.record:
        if not (args.commit and args.box and args.made_with):
            parser.error("--record needs --commit, --box and --made-with")
        add(manifest, args.record, record(args.record, args.commit, tuple(args.box), args.made_with))
    else:
        write_current(manifest)


if __name__ == "__main__":
    main()
