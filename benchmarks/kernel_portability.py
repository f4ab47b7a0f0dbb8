"""Do .ncf files decode under other CPU kernels than the encoder's? PyTorch picks its SIMD
kernels per CPU (AVX512, AVX2, none); ATEN_CPU_CAPABILITY forces a set, so one machine can
stand in for others. Each model encodes the image once with this CPU's kernels, then every
kernel set decodes it in its own process; the pixels are compared with the native decode.

    python benchmarks/kernel_portability.py [--models mlic-medium-gaussian,hyperprior-small]

Known result (docs/reliability.md): files do not yet move between kernel sets, because the
coder's parameters come from float32 networks that round differently on each.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from codec.zoo import DEFAULT_IMAGE_MODEL

ROOT = Path(__file__).resolve().parent.parent
CAPABILITIES = ["native", "avx512", "avx2", "default"]


def _cli(args: list[str], capability: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    return subprocess.run([sys.executable, "-m", "codec.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_IMAGE_MODEL, help="comma-separated presets")
    ap.add_argument("--image", default=str(ROOT / "examples/kodim23.png"))
    ap.add_argument("--quality", type=float, default=4.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            ncf = Path(tmp) / f"{model}.ncf"
            enc = _cli(["encode", args.image, "-o", str(ncf), "--model", model,
                        "--quality", str(args.quality)], "native")
            if enc.returncode:
                sys.exit(f"{model}: encode failed: {enc.stderr.strip()}")
            decoded = {}
            for cap in CAPABILITIES:
                png = Path(tmp) / f"{model}-{cap}.png"
                dec = _cli(["decode", str(ncf), "-o", str(png)], cap)
                decoded[cap] = np.array(Image.open(png)) if dec.returncode == 0 else dec.stderr.strip()
            for cap, result in decoded.items():
                if isinstance(result, str):
                    verdict = f"FAILS: {result[:100]}"
                elif isinstance(decoded["native"], str):
                    verdict = "decodes (native failed)"
                else:
                    verdict = ("decodes, same pixels" if np.array_equal(result, decoded["native"])
                               else "decodes, other pixels")
                print(f"{model:24s} decode with {cap:8s} kernels: {verdict}")


if __name__ == "__main__":
    main()
