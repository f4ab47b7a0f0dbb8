"""Entropy coding benchmark: neurocodec's rANS coders against CompressAI's table rANS and constriction.

    python benchmarks/entropy_coding.py            # 1M symbols, prints the tables + JSON
    python benchmarks/entropy_coding.py --json --quick   # 200k symbols, last line is JSON
    python benchmarks/entropy_coding.py --anchor-only    # only the CompressAI comparison (1M symbols)

The speed anchor (issue 37) is CompressAI's raw table coder in the same process and thread:
``RansEncoder.encode_with_indexes`` / ``RansDecoder.decode_with_indexes`` on a
``GaussianConditional``'s precomputed tables (``update_scale_table(get_scale_table())``,
``update()``, then ``quantized_cdf``, ``cdf_length``, ``offset``), 1M symbols with scales
log-uniform in [0.11, 16] and in [0.11, 1] (``anchor_data``).  Our Gaussian and GMM K=3
coders run on the same scales, the coders round-robin, and the table gives Msym/s in CPU
time of the thread and the ratio to the anchor (``vs_compressai_tables`` in the JSON, with
wall-clock rates under ``wall``).  ``GaussianConditional.compress`` / ``decompress`` are not
timed: they add index building and list conversion, which flattered us as an anchor.

The family table: symbols are drawn like real latents: per-symbol scales from a mixture that is mostly
small (60 % in [0.05, 0.5], 30 % in [0.5, 4], 10 % in [4, 64]), means ~ N(0, 3), and the
symbol is round(y) with y drawn from the family's own density (so the ideal rate is the
model's cross-entropy).  ``overhead_pct`` = 100 * (bits / ideal - 1), where ideal is the
sum of -log2 p(k) under the continuous model with the *float* (unquantized) parameters,
p(k) = F(k + 0.5) - F(k - 0.5).  All timings are single-threaded, best of ``--repeat``:
wall clock (``enc_msym_s``, ``dec_msym_s``, ``total_s``) and, because the machine may be
shared, also CPU time of the process (``*_cpu``).

``gmm4_tables`` is the per-symbol-table baseline: for every symbol a CDF table over its
support is built with numpy (the same quantized CDF function as the on-the-fly coder,
evaluated bit-exactly in numpy) and coded with our table mode.  Table building is done
at the encoder and again at the decoder and counted in both; it runs in chunks of
``TABLE_CHUNK`` symbols (one stream per chunk) to bound memory, and every chunk's bytes
are checked to be identical to ``encode("gmm", chunk)``.  Because it is ~1000x slower it
runs on the first ``--table-n`` symbols only (its row says how many); the speedup is
computed per symbol.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from codec import entropy as E  # noqa: E402
from codec.entropy import _rans  # noqa: E402

TABLE_CHUNK = 8192
ANCHOR_SCALES = ((0.11, 16.0), (0.11, 1.0))  # issue 37's scale ranges
N_CHANNELS = 192


# ---------------------------------------------------------------- data
def draw_scales(rng, shape):
    u = rng.random(shape)
    lo = np.where(u < 0.6, 0.05, np.where(u < 0.9, 0.5, 4.0))
    hi = np.where(u < 0.6, 0.5, np.where(u < 0.9, 4.0, 64.0))
    return np.exp(rng.uniform(np.log(lo), np.log(hi)))


def draw(family, n, rng, K=4):
    """Returns (float params dict, int32 symbols)."""
    if family == "gmm":
        w = rng.dirichlet(np.ones(K), size=n)
        base = rng.normal(0, 3, (n, 1))
        mean = base + rng.normal(0, 1.5, (n, K))
        scale = draw_scales(rng, (n, K))
        comp = (rng.random((n, 1)) > np.cumsum(w, axis=1)).sum(axis=1)
        comp = np.minimum(comp, K - 1)
        r = np.arange(n)
        y = mean[r, comp] + scale[r, comp] * rng.standard_normal(n)
        return dict(weight=w, mean=mean, scale=scale), np.rint(y).astype(np.int32)
    mean = rng.normal(0, 3, n)
    scale = draw_scales(rng, n)
    if family == "gaussian":
        y = mean + scale * rng.standard_normal(n)
        params = dict(mean=mean, scale=scale)
    elif family == "laplace":
        y = mean + rng.laplace(0, 1, n) * scale
        params = dict(mean=mean, scale=scale)
    elif family == "gg":
        # one shape per channel, symbols in channel-major order like a latent tensor
        beta_c = rng.uniform(0.5, 2.5, N_CHANNELS)
        beta = np.repeat(beta_c, -(-n // N_CHANNELS))[:n]
        g = rng.gamma(1.0 / beta, 1.0, n) ** (1.0 / beta)
        y = mean + scale * g * np.where(rng.random(n) < 0.5, -1.0, 1.0)
        params = dict(mean=mean, scale=scale, beta=beta)
    else:
        raise ValueError(family)
    return params, np.rint(y).astype(np.int32)


def ideal_bits(family, params, sym):
    """sum of -log2 p(k) under the continuous model with float parameters."""
    from scipy import special, stats

    k = sym.astype(np.float64)

    def interval(cdf_upper_tail, m, s, **kw):
        # mass of [k-0.5, k+0.5) computed from the nearer tail for accuracy
        a = (k - 0.5 - m) / s
        b = (k + 0.5 - m) / s
        right = a > 0
        p = np.where(right, cdf_upper_tail(a, **kw) - cdf_upper_tail(b, **kw),
                     cdf_upper_tail(-b, **kw) - cdf_upper_tail(-a, **kw))
        return p

    if family == "gaussian":
        p = interval(lambda z: special.ndtr(-z), params["mean"], params["scale"])
    elif family == "laplace":
        p = interval(lambda z: stats.laplace.sf(z), params["mean"], params["scale"])
    elif family == "gg":
        beta = params["beta"]
        p = interval(lambda z, beta: stats.gennorm.sf(z, beta), params["mean"], params["scale"], beta=beta)
    elif family == "gmm":
        w = params["weight"] / params["weight"].sum(axis=1, keepdims=True)
        p = np.zeros(len(sym))
        for q in range(w.shape[1]):
            m, s = params["mean"][:, q], params["scale"][:, q]
            a = (k - 0.5 - m) / s
            b = (k + 0.5 - m) / s
            pq = np.where(a > 0, special.ndtr(-a) - special.ndtr(-b), special.ndtr(b) - special.ndtr(a))
            p += w[:, q] * pq
    return float(-np.log2(np.maximum(p, 1e-300)).sum())


# ---------------------------------------------------------------- per-symbol tables (numpy)
_GT = _rans.gauss_table()
_INV = _rans.inv_scale_table()
_WG = _rans.gauss_halfwidth_table()


def _g_np(z):
    """numpy replica of the C++ Gaussian half-CDF sign(z) * (Phi(|z|) - 0.5): same operations."""
    n = _GT.shape[0] - 1  # last row: sentinel interval, g = 0.5
    u = np.minimum(np.abs(z) * float(_rans.GZ_STEPS), float(n))
    i = u.astype(np.int64)
    s = u - i
    c = _GT[i]
    g = c[..., 0] + s * (c[..., 1] + s * (c[..., 2] + s * c[..., 3]))
    return np.copysign(g, z)


def gmm_tables(codes, precision=E.PRECISION):
    """Per-symbol quantized CDF tables, bit-identical to the on-the-fly GMM coder (K >= 2)."""
    w = codes["weight"].astype(np.int64)
    mc = codes["mean"].astype(np.int64)
    si = codes["scale"]
    M = 1 << precision
    n, K = w.shape
    mu = mc * (1.0 / 65536.0)
    inv = _INV[si]
    m = (mc + 32768) >> 16
    W = _WG[si]
    active = w > 0
    big = np.int64(1) << 50
    lo = np.where(active, m - W, big).min(axis=1)
    hi = np.where(active, m + W, -big).max(axis=1)
    wf = w.astype(np.float64)
    invW = 1.0 / w.sum(axis=1).astype(np.float64)
    wn = wf * invW[:, None]
    mode = m[np.arange(n), np.argmax(w, axis=1)]  # mode of the heaviest component
    wmax = (M // 16 - 1) // 2
    lo = np.maximum(lo, mode - wmax)
    hi = np.minimum(hi, mode + wmax)
    nsup = hi - lo + 1
    R = (M - 1 - nsup).astype(np.float64)
    L = int(nsup.max()) + 2
    j = np.arange(L - 1)
    kk = lo[:, None] + j[None, :]  # k = lo .. lo + L - 2
    x = kk.astype(np.float64) - 0.5
    acc = np.zeros(kk.shape)
    for q in range(K):
        t = wn[:, q:q + 1] * _g_np((x - mu[:, q:q + 1]) * inv[:, q:q + 1])
        acc = acc + np.where(active[:, q:q + 1], t, 0.0)
    F = 0.5 + acc
    v = np.minimum(np.maximum(F * R[:, None], 0.0), R[:, None])
    C = np.trunc(v).astype(np.int64) + j[None, :]
    C[:, 0] = 0
    C = np.where(kk == hi[:, None] + 1, M - 1, C)
    C = np.where(kk > hi[:, None] + 1, M, C)
    cdfs = np.concatenate([C, np.full((n, 1), M, np.int64)], axis=1).astype(np.int32)
    return cdfs, (nsup + 2).astype(np.int32), lo.astype(np.int32)


# ---------------------------------------------------------------- coders
def best_time(fn, repeat):
    """(best wall seconds, best CPU seconds of this process, result) over ``repeat`` runs."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best_cpu = min(best_cpu, time.process_time() - c)
        best = min(best, time.perf_counter() - t)
    return best, best_cpu, out


def result(n, te, td, nbits, ideal):
    """te, td: (wall, cpu) seconds."""
    return {
        "n_symbols": int(n),
        "enc_msym_s": round(n / te[0] / 1e6, 6),
        "dec_msym_s": round(n / td[0] / 1e6, 6),
        "total_s": round(te[0] + td[0], 4),
        "overhead_pct": round(100.0 * (nbits / ideal - 1.0), 4),
        "bits_per_symbol": round(nbits / n, 5),
        "enc_msym_s_cpu": round(n / max(te[1], 1e-9) / 1e6, 6),
        "dec_msym_s_cpu": round(n / max(td[1], 1e-9) / 1e6, 6),
        "total_s_cpu": round(te[1] + td[1], 4),
    }


def bench_ours(family, params, sym, repeat, K=None):
    codes = E.quantize_params(family, **params)
    *te, data = best_time(lambda: E.encode(family, sym, codes), repeat)
    *td, dec = best_time(lambda: E.decode(family, data, codes), repeat)
    assert np.array_equal(dec, sym), family
    return result(len(sym), te, td, 8 * len(data), ideal_bits(family, params, sym))


def bench_gmm_tables(params, sym, repeat):
    codes = E.quantize_params("gmm", **params)
    n = len(sym)
    chunks = [(a, min(a + TABLE_CHUNK, n)) for a in range(0, n, TABLE_CHUNK)]
    sub = [{k: v[a:b] for k, v in codes.items()} for a, b in chunks]

    def enc():
        out = []
        for (a, b), c in zip(chunks, sub):
            cdfs, lengths, offsets = gmm_tables(c)
            out.append(E.encode_table(sym[a:b], np.arange(b - a, dtype=np.int32), cdfs, lengths, offsets,
                                      precision=E.PRECISION))
        return out

    def dec(datas):
        out = []
        for d, c in zip(datas, sub):
            cdfs, lengths, offsets = gmm_tables(c)
            out.append(E.decode_table(d, np.arange(len(lengths), dtype=np.int32), cdfs, lengths, offsets,
                                      precision=E.PRECISION))
        return np.concatenate(out)

    *te, datas = best_time(enc, repeat)
    *td, decoded = best_time(lambda: dec(datas), repeat)
    assert np.array_equal(decoded, sym)
    identical = all(d == E.encode("gmm", sym[a:b], c) for d, (a, b), c in zip(datas, chunks, sub))
    r = result(n, te, td, 8 * sum(len(d) for d in datas), ideal_bits("gmm", params, sym))
    r["identical_bits_to_gmm4"] = bool(identical)
    return r


def compressai_tables():
    """CompressAI's GaussianConditional tables (its default 64 scales), as the Python lists its coder takes."""
    import torch
    from compressai.entropy_models import GaussianConditional
    from compressai.models.google import get_scale_table

    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    gc.update()
    tables = (gc.quantized_cdf.tolist(), gc.cdf_length.reshape(-1).int().tolist(), gc.offset.reshape(-1).int().tolist())
    return gc, torch, tables


def anchor_data(n, lo, hi, rng, K=3):
    """1M-symbol sets of the anchor comparison: scales log-uniform in [lo, hi], means ~ N(0, 3).

    Gaussian: y = mean + scale * N(0, 1).  GMM K=3: Dirichlet(1, 1, 1) weights, component
    means = mean + N(0, 1.5), component scales log-uniform in [lo, hi], y from the mixture.
    """
    lu = lambda shape: np.exp(rng.uniform(np.log(lo), np.log(hi), shape))  # noqa: E731
    mean, scale = rng.normal(0, 3, n), lu(n)
    y = mean + scale * rng.standard_normal(n)
    gauss = dict(mean=mean, scale=scale), y
    w = rng.dirichlet(np.ones(K), size=n)
    cm = mean[:, None] + rng.normal(0, 1.5, (n, K))
    cs = lu((n, K))
    comp = np.minimum((rng.random((n, 1)) > np.cumsum(w, axis=1)).sum(axis=1), K - 1)
    r = np.arange(n)
    ygmm = cm[r, comp] + cs[r, comp] * rng.standard_normal(n)
    return gauss, (dict(weight=w, mean=cm, scale=cs), ygmm)


def interleaved_best(fns, repeat):
    """Best time of each callable, in CPU seconds of the calling thread (every coder compared
    this way runs on that one thread, and a shared machine moves wall clock by 2x) and in wall
    seconds; the callables run round-robin so that a change in load hits all of them alike.
    Returns ({name: (cpu, wall)}, {name: last result})."""
    best = {k: (float("inf"), float("inf")) for k in fns}
    out = {}
    for _ in range(repeat):
        for k, fn in fns.items():
            c, t = time.thread_time(), time.perf_counter()
            out[k] = fn()
            c, t = time.thread_time() - c, time.perf_counter() - t
            best[k] = (min(best[k][0], c), min(best[k][1], t))
    return best, out


def bench_anchor(n, ranges, seed, repeat):
    """Ours against CompressAI's raw table rANS (``RansEncoder.encode_with_indexes`` /
    ``RansDecoder.decode_with_indexes`` on the precomputed ``quantized_cdf``, ``cdf_length``
    and ``offset`` of a ``GaussianConditional`` with its default scale table), in one process,
    one thread.  CompressAI codes round(y - mean) with the index of the scale (its
    ``build_indexes``; index building and the lists it takes are prepared outside the timing);
    we code round(y) with the quantized mean and scale, and GMM K=3 symbols with theirs.
    Returns one row per scale range with Msym/s (thread CPU time; ``wall``: wall clock) and
    the ratios to the anchor."""
    from compressai.ans import RansDecoder, RansEncoder

    gc, torch, (cdfs, lengths, offsets) = compressai_tables()
    rows = {}
    for lo, hi in ranges:
        rng = np.random.default_rng(seed)
        (gp, y), (mp, ym) = anchor_data(n, lo, hi, rng)
        gsym, msym = np.rint(y).astype(np.int32), np.rint(ym).astype(np.int32)
        gcodes, mcodes = E.quantize_params("gaussian", **gp), E.quantize_params("gmm", **mp)
        with torch.no_grad():
            idx = gc.build_indexes(torch.from_numpy(gp["scale"]).float()).int().tolist()
        res = np.rint(y - gp["mean"]).astype(np.int32).tolist()
        gdata, mdata = E.encode("gaussian", gsym, gcodes), E.encode("gmm", msym, mcodes)
        cdata = RansEncoder().encode_with_indexes(res, idx, cdfs, lengths, offsets)
        t, out = interleaved_best({
            "anchor_enc": lambda: RansEncoder().encode_with_indexes(res, idx, cdfs, lengths, offsets),
            "anchor_dec": lambda: RansDecoder().decode_with_indexes(cdata, idx, cdfs, lengths, offsets),
            "gaussian_enc": lambda: E.encode("gaussian", gsym, gcodes),
            "gaussian_dec": lambda: E.decode("gaussian", gdata, gcodes),
            "gmm3_enc": lambda: E.encode("gmm", msym, mcodes),
            "gmm3_dec": lambda: E.decode("gmm", mdata, mcodes),
        }, repeat)
        assert out["anchor_dec"] == res and out["anchor_enc"] == cdata
        assert np.array_equal(out["gaussian_dec"], gsym) and np.array_equal(out["gmm3_dec"], msym)
        assert out["gaussian_enc"] == gdata and out["gmm3_enc"] == mdata
        msym_s = {k: n / v[0] / 1e6 for k, v in t.items()}
        row = {k: round(v, 3) for k, v in msym_s.items()}
        row["wall"] = {k: round(n / v[1] / 1e6, 3) for k, v in t.items()}
        for c in ("gaussian", "gmm3"):
            for d in ("enc", "dec"):
                row[f"{c}_{d}_ratio"] = round(msym_s[f"{c}_{d}"] / msym_s[f"anchor_{d}"], 3)
        row["bits_per_symbol"] = {"anchor": round(8 * len(cdata) / n, 4), "gaussian": round(8 * len(gdata) / n, 4),
                                  "gmm3": round(8 * len(mdata) / n, 4)}
        rows[f"scales {lo}-{hi}"] = row
    return rows


def print_anchor(rows, n, repeat):
    print(f"vs CompressAI table rANS (raw RansEncoder/RansDecoder, GaussianConditional tables): {n} symbols, "
          f"1 thread, best of {repeat}, Msym/s in thread CPU time (ratio to the anchor)")
    print(f"{'scales':14s} {'anchor enc':>10s} {'anchor dec':>10s} {'gauss enc':>16s} {'gauss dec':>16s} "
          f"{'gmm3 enc':>16s} {'gmm3 dec':>16s}")
    for k, r in rows.items():
        cell = lambda c, d: f"{r[f'{c}_{d}']:.2f} ({r[f'{c}_{d}_ratio']:.2f}x)"  # noqa: E731
        print(f"{k[7:]:14s} {r['anchor_enc']:10.2f} {r['anchor_dec']:10.2f} {cell('gaussian', 'enc'):>16s} "
              f"{cell('gaussian', 'dec'):>16s} {cell('gmm3', 'enc'):>16s} {cell('gmm3', 'dec'):>16s}")


def bench_constriction(params, sym, repeat):
    import constriction

    lo, hi = int(sym.min()) - 1, int(sym.max()) + 1
    model = constriction.stream.model.QuantizedGaussian(lo, hi)
    means = params["mean"].astype(np.float64)
    stds = params["scale"].astype(np.float64)

    def enc():
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(sym, model, means, stds)
        return coder.get_compressed()

    *te, comp = best_time(enc, repeat)
    *td, dec = best_time(lambda: constriction.stream.stack.AnsCoder(comp).decode(model, means, stds), repeat)
    assert np.array_equal(np.asarray(dec), sym)
    return result(len(sym), te, td, 32 * len(comp), ideal_bits("gaussian", params, sym))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    ap.add_argument("--quick", action="store_true", help="200k symbols instead of 1M")
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("--table-n", type=int, default=None,
                    help="symbols for the (slow) per-symbol-table baseline (default 16k quick, 98k full)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--anchor-only", action="store_true",
                    help="only the comparison with CompressAI's table rANS (always 1M symbols unless -n)")
    args = ap.parse_args(argv)
    n = args.n or (200_000 if args.quick else 1_000_000)
    res = {}
    if not args.anchor_only:
        rng = np.random.default_rng(args.seed)
        for fam in ("gaussian", "laplace", "gg"):
            params, sym = draw(fam, n, rng)
            res[fam] = bench_ours(fam, params, sym, args.repeat)
        gparams, gsym = draw("gaussian", n, np.random.default_rng(args.seed))
        for K in (3, 4):
            params, sym = draw("gmm", n, rng, K=K)
            res[f"gmm{K}"] = bench_ours("gmm", params, sym, args.repeat)
            if K == 4:
                nt = min(n, args.table_n or (16_384 if args.quick else 98_304))
                res["gmm4_tables"] = bench_gmm_tables({k: v[:nt] for k, v in params.items()}, sym[:nt], 1)
        res["constriction_gaussian"] = bench_constriction(gparams, gsym, args.repeat)
        r4, t4 = res["gmm4"], res["gmm4_tables"]
        per_sym = lambda r: r["total_s"] / r["n_symbols"]  # noqa: E731
        res["gmm4_tables"]["gmm4_speedup_end_to_end"] = round(per_sym(t4) / per_sym(r4), 1)
        res["gmm4_tables"]["gmm4_speedup_end_to_end_cpu"] = round(
            (t4["total_s_cpu"] / t4["n_symbols"]) / (r4["total_s_cpu"] / r4["n_symbols"]), 1)

        print(f"neurocodec entropy coding benchmark: {n} symbols, precision {E.PRECISION} bits, best of {args.repeat}")
        print(f"{'coder':24s} {'symbols':>8s} {'enc Msym/s':>11s} {'dec Msym/s':>11s} {'total s':>9s} "
              f"{'overhead %':>11s} {'bits/sym':>9s} {'enc cpu':>8s} {'dec cpu':>8s}")
        for k, v in res.items():
            print(f"{k:24s} {v['n_symbols']:8d} {v['enc_msym_s']:11.4g} {v['dec_msym_s']:11.4g} {v['total_s']:9.3f} "
                  f"{v['overhead_pct']:11.4f} {v['bits_per_symbol']:9.4f} {v['enc_msym_s_cpu']:8.4g} "
                  f"{v['dec_msym_s_cpu']:8.4g}")
        print(f"gmm4 end-to-end speedup over per-symbol tables: {res['gmm4_tables']['gmm4_speedup_end_to_end']}x, "
              f"identical bits: {res['gmm4_tables']['identical_bits_to_gmm4']}")
    na = args.n or 1_000_000
    res["vs_compressai_tables"] = bench_anchor(na, ANCHOR_SCALES, args.seed, args.repeat)
    print_anchor(res["vs_compressai_tables"], na, args.repeat)
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
