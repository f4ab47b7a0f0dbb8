"""How kodim01's decode uses a second core (issue notes, docs/benchmarks.md): run with both
cores free.

    python benchmarks/thread_scaling.py [--image ../shared/data/kodak/kodim01.png] [--quality 4] [--repeat 5]

1. The decode's two phases (the latents: z, hyper synthesis, context model and rANS; the
   synthesis) on 1 and 2 threads, best of `--repeat`.
2. The parameter path's exact products (`codec.exact` patches_gemm, as one decode calls them)
   on 1 and 2 threads; and the largest of them on one thread alone against two copies at once,
   one per thread: what this machine gives that kernel on two cores.
3. Whole 1-thread decodes: one process alone against two processes at once.
"""
from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def decode_seconds(args) -> float:
    """Best 1-thread decode seconds of `data` (in a process of its own)."""
    data, repeat, start = args
    from codec.image import decode_image
    decode_image(data, threads=1)
    start.wait()
    return best(lambda: decode_image(data, threads=1), repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(ROOT.parent / "shared/data/kodak/kodim01.png"))
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import codec.exact
    import codec.image.pipeline as pipeline
    from codec.image import decode_image, encode_image, load_rgb

    data = encode_image(load_rgb(args.image), quality=args.quality, threads=1)

    # 1. phases
    spent = {}
    for name in ("_decode_latents", "_synthesis"):
        def timed(*a, _fn=getattr(pipeline, name), _name=name, **k):
            t0 = time.perf_counter()
            out = _fn(*a, **k)
            spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t0
            return out
        setattr(pipeline, name, timed)
    for threads in (1, 2):
        phases = []
        for _ in range(args.repeat):
            spent.clear()
            t0 = time.perf_counter()
            decode_image(data, threads=threads)
            phases.append((time.perf_counter() - t0, spent["_decode_latents"], spent["_synthesis"]))
        total, latents, synthesis = (min(p[i] for p in phases) for i in range(3))
        print(f"decode on {threads} thread(s): {total:.3f} s (latents {latents:.3f} s, synthesis {synthesis:.3f} s)")

    # 2. the exact products
    kernels, calls = codec.exact._kernels, []

    class Recording:
        def __getattr__(self, name):
            return getattr(kernels, name)

        @staticmethod
        def patches_gemm(*a):
            calls.append(a[:-1])
            return kernels.patches_gemm(*a)

    codec.exact._kernels = Recording()
    decode_image(data, threads=1)
    codec.exact._kernels = kernels
    for threads in (1, 2):
        s = best(lambda: [kernels.patches_gemm(*c, threads) for c in calls], args.repeat)
        print(f"{len(calls)} products on {threads} thread(s): {s:.3f} s")
    largest = max(calls, key=lambda c: c[0].shape[0] * len(c[2]) * len(c[3]))
    alone = best(lambda: kernels.patches_gemm(*largest, 1), args.repeat)

    def two_at_once():
        pair = [threading.Thread(target=kernels.patches_gemm, args=(*largest, 1)) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join()

    print(f"largest product {largest[0].shape[0]}x{len(largest[2])}x{len(largest[3])}: {alone * 1e3:.1f} ms alone, "
          f"{best(two_at_once, args.repeat) * 1e3:.1f} ms for two copies at once (one per thread)")

    # 3. whole decodes, one process against two at once
    ctx = multiprocessing.get_context("spawn")
    for n in (1, 2):
        with ctx.Manager() as manager:
            start = manager.Barrier(n)
            with ctx.Pool(n) as pool:
                seconds = pool.map(decode_seconds, [(data, args.repeat, start)] * n)
        print(f"1-thread decode, {n} process(es) at once: " + ", ".join(f"{s:.3f} s" for s in seconds))


if __name__ == "__main__":
    main()
