"""Why mlic-tiny stops near 29.7 dB, and where decoding time goes (the numbers in
docs/models.md and docs/benchmarks.md).

    python benchmarks/decode_profile.py [--model mlic-tiny-gaussian] [--kodak ../shared/data/kodak] [--repeat 3]
                                        [--versions-only]

1. Block PCA of Kodak: PSNR when each 16x16x3 block (the area of one latent position at
   stride 16) keeps its first k principal components, k = 96 (mlic-tiny's M), 192
   (mlic-small's): a linear bound on what a latent of that width can carry.
2. Coding kodim01: encode and decode seconds, the part of decoding spent in the entropy
   decoder, and the two transforms under each setting in one process (best of `--repeat`):
   the analysis on native convolutions with 1 and 2 threads against oneDNN on one thread
   (what the encoder uses), the synthesis on native convolutions against oneDNN, with
   channels-first and channels-last activations (the decoder uses the last).
3. Every coder version's encode and decode CPU seconds for kodim01 (best of `--repeat`, the
   versions interleaved in each round), and the decode time of each against version 3's
   (`--versions-only` runs this part alone).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

import codec
from codec import entropy
import codec.image.pipeline
from codec.image import PARAMETER_DTYPES, load_rgb
from codec.zoo import DEFAULT_IMAGE_MODEL, load_model

ROOT = Path(__file__).resolve().parent.parent


def block_pca_psnr(images, ks, side=16):
    blocks = []
    for im in images:
        h, w = (s - s % side for s in im.shape[:2])
        b = im[:h, :w].astype(np.float64) / 255
        blocks.append(b.reshape(h // side, side, w // side, side, 3).transpose(0, 2, 1, 3, 4).reshape(-1, side * side * 3))
    x = np.concatenate(blocks)
    eig = np.linalg.eigvalsh(np.cov((x - x.mean(0)).T))[::-1]
    return {k: 10 * np.log10(x.shape[1] / eig[k:].sum()) for k in ks}


def timed_decode(data: bytes, threads: int | None = None) -> tuple[float, float]:
    """(seconds to decode `data` on `threads`, of them the seconds inside the entropy decoder's calls)."""
    spent = [0.0]
    untimed = {name: getattr(entropy.ChainDecoder, name) for name in ("decode", "decode_table")}

    def timed(method):
        def run(*a, **kw):
            t = time.perf_counter()
            out = method(*a, **kw)
            spent[0] += time.perf_counter() - t
            return out
        return run

    for name, method in untimed.items():
        setattr(entropy.ChainDecoder, name, timed(method))
    try:
        t = time.perf_counter()
        codec.decode_image(data, threads=threads)
        total = time.perf_counter() - t
    finally:
        for name, method in untimed.items():
            setattr(entropy.ChainDecoder, name, method)
    return total, spent[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared/data/kodak"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--versions-only", action="store_true")
    args = ap.parse_args()
    paths = sorted(Path(args.kodak).glob("*.png"))
    torch.set_num_threads(1)
    if args.versions_only:
        return compare_versions(args.model, load_rgb(paths[0]), args.repeat)
    for k, p in block_pca_psnr([load_rgb(p) for p in paths], (96, 192)).items():
        print(f"block PCA, {k} of 768 components: {p:.2f} dB over {len(paths)} images")

    rgb = load_rgb(paths[0])
    t = time.perf_counter()
    data = codec.encode_image(rgb, model=args.model)
    encode_s = time.perf_counter() - t
    total, spent = timed_decode(data)
    print(f"{args.model} {paths[0].name}: encode {encode_s:.2f} s, decode {total:.2f} s, "
          f"of which entropy decoding {spent:.3f} s")

    def best(f):
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    net, _ = load_model(args.model)
    q = torch.tensor([4.0])
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = net.analysis(x, q)
        for threads, onednn in ((1, False), (2, False), (1, True)):
            torch.set_num_threads(threads)
            torch.backends.mkldnn.enabled = onednn
            print(f"analysis, {threads} thread(s), {'oneDNN' if onednn else 'native'}: "
                  f"{best(lambda: net.analysis(x, q)):.3f} s")
        torch.set_num_threads(1)
        for onednn, layout in ((False, torch.contiguous_format), (True, torch.contiguous_format),
                               (True, torch.channels_last)):
            torch.backends.mkldnn.enabled = onednn
            y_in = y.contiguous(memory_format=layout)
            print(f"synthesis, one thread, {'oneDNN' if onednn else 'native'}, "
                  f"{'channels-last' if layout is torch.channels_last else 'channels-first'}: "
                  f"{best(lambda: net.synthesis(y_in, q)):.3f} s")
    torch.backends.mkldnn.enabled = True

    compare_versions(args.model, rgb, args.repeat)


def compare_versions(model: str, rgb: np.ndarray, repeat: int) -> None:
    """Best CPU seconds of this process (one thread: on a shared machine its wall time measures the
    neighbours too) per coder version, the versions interleaved in every round."""
    shipped, files = codec.image.pipeline.CODER_VERSION, {}
    times = {v: {"encode": [], "decode": []} for v in PARAMETER_DTYPES}
    try:
        for _ in range(repeat):
            for version in PARAMETER_DTYPES:
                codec.image.pipeline.CODER_VERSION = version
                t = time.process_time()
                files[version] = codec.encode_image(rgb, model=model)
                times[version]["encode"].append(time.process_time() - t)
                t = time.process_time()
                codec.decode_image(files[version])
                times[version]["decode"].append(time.process_time() - t)
    finally:
        codec.image.pipeline.CODER_VERSION = shipped
    for version, dtype in PARAMETER_DTYPES.items():
        exact = codec.image.pipeline.exact_parameters(load_model(model)[0], version)
        route = "codec.exact" if exact else f"{dtype} PyTorch"
        encode_s, decode_s = min(times[version]["encode"]), min(times[version]["decode"])
        print(f"coder version {version} ({route} parameter networks): CPU seconds encode {encode_s:.3f}, "
              f"decode {decode_s:.3f}, {decode_s / min(times[3]['decode']):.2f}x version 3's decode")


if __name__ == "__main__":
    main()
