"""The coder's parameters with the same bits on every CPU and thread count.

The networks that compute the entropy coder's parameters (hyper synthesis, context models,
parameter heads, LRP) decide every parameter code; a decoder that computes one code
differently cannot decode the file. PyTorch's kernels differ between CPUs (AVX512, AVX2,
none; docs/reliability.md), so coder version 4 runs those networks on codec.exact._kernels
instead: one fixed sequence of IEEE-754 operations per output, which every CPU rounds alike.

`parameter_net(model)` is a copy of a model whose parameter path runs on those kernels with
float64 weights; the model's own code (MLIC.coding_steps, hyper_synthesis) drives it (with
MLIC.heads_at_pass_positions on, which changes no value): what it adds to the exact modules
(slicing, concatenation, masks, +, *, max) is exact in PyTorch too. `quantize_params` snaps the
parameters to the coder's grid by comparisons only (the coder's codes for the same grid,
without a logarithm that the C library or NumPy's SIMD could round otherwise). float64, not
float32: `_kernels.gemm` runs at nearly the same speed in both (a 320 x 480 by 480 x 1536
product, the largest of mlic-medium's heads: 6.2 and 7.9 GMAC/s on an AVX2 EPYC, best of 5),
and float64 stays next to the float64 networks of coder versions 2 and 3 (mlic-medium-gaussian
on kodim01 at quality 4: all 589,824 mean and scale codes equal version 3's).
"""
from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
import torch.nn as nn

from codec import entropy
from codec.exact import _kernels
from models.hyperprior import MeanScaleHyperprior
from models.likelihoods import GaussianMixture
from models.mlic import MLIC, ChannelReweight, LinearAttention

DTYPE = torch.float64
# the submodules that compute the coder's parameters, per model class
PARAMETER_PATH = {
    MLIC: ("h_s", "reweight", "channel_ctx", "inter_ctx", "local_ctx", "intra_ctx", "anchor_head",
           "nonanchor_head", "lrp", "lrp_squash"),
    MeanScaleHyperprior: ("h_s",),
}
# families whose parameters follow from a head's output by exact operations (split, max; for
# mixtures the softmax on the exact exp, ExactGaussianMixture)
FAMILIES = ("gaussian", "laplace", "gmm")


# the most bytes of packed patches `conv2d` gives one product
COLUMN_BYTES = 1 << 24
# threads each product may use (`threads`): its outputs are the same bits on any number
_threads = 1


@contextlib.contextmanager
def threads(n: int):
    """Run the block's products on up to n threads (each output on one: the same bits)."""
    global _threads
    before, _threads = _threads, int(n)
    try:
        yield
    finally:
        _threads = before


def gemm(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """bias[:, None] + a @ b on the exact kernels, on the threads `threads` allows."""
    return _kernels.gemm(a, b, bias, _threads)


def elementwise(name: str, x: np.ndarray) -> np.ndarray:
    """The exact kernel `name` (gelu, elu, sigmoid, tanh, ...) of x, on the threads `threads` allows."""
    return getattr(_kernels, name)(x, _threads)


# ----------------------------------------------------------------------------- operations
def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, padding: tuple[int, int],
           at: np.ndarray | None = None) -> np.ndarray:
    """Stride-1 zero-padded convolution of x (C, H, W): a product with the image's patches,
    each output summed over (input channel, kernel row, kernel column) in that order.
    `at` (H', W') bool: only the outputs there, (out channels, count), the same bits.
    The kernels gather the patches from x as they pack them (`_kernels.patches_gemm`: building
    them in NumPy was a copy on one thread, hundreds of MB per tile), COLUMN_BYTES of packed
    patches per product: each output's sum is the same whichever product holds its column."""
    out_ch, in_ch, kh, kw = weight.shape
    ph, pw = padding
    x = np.ascontiguousarray(np.pad(x, ((0, 0), (ph, ph), (pw, pw))) if ph or pw else x)
    _, hp, wp = x.shape
    h, w = hp - kh + 1, wp - kw + 1
    k_offset = (np.arange(in_ch)[:, None, None] * (hp * wp) + np.arange(kh)[:, None] * wp + np.arange(kw)).ravel()
    n_offset = np.arange(h)[:, None] * wp + np.arange(w)
    n_offset = n_offset[at] if at is not None else n_offset.ravel()
    columns = max(1, COLUMN_BYTES // (x.itemsize * len(k_offset)))
    a = weight.reshape(out_ch, -1)
    parts = [_kernels.patches_gemm(a, x, k_offset, n_offset[i:i + columns], bias, _threads)
             for i in range(0, max(len(n_offset), 1), columns)]
    out = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return out if at is not None else out.reshape(out_ch, h, w)


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int, padding: int,
                     output_padding: int) -> np.ndarray:
    """Transposed convolution: the convolution, by the flipped kernel, of x with stride - 1
    zeros between its samples, each output summed over (input channel, kernel row, kernel
    column) in that order, skipping the taps that meet those zeros (a product with 0 changes
    no sum). Computed per output phase (row % stride, column % stride): the taps that meet
    samples are the same for every output of a phase, a stride-1 convolution of x."""
    in_ch, out_ch, k, _ = weight.shape
    _, h, w = x.shape
    s, lo = stride, k - 1 - padding
    out_h, out_w = (h - 1) * s - 2 * padding + k + output_padding, (w - 1) * s - 2 * padding + k + output_padding
    flipped = weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # (out, in, k, k)
    margin = k  # zeros around x: every tap's offset lies within it
    padded = np.pad(x, ((0, 0), (margin, margin), (margin, margin)))
    out = np.empty((out_ch, out_h, out_w), dtype=x.dtype)

    def taps(phase: int, n_out: int):
        """(kernel indices, input index of each (tap, output)) for the outputs phase, phase + s, ..."""
        ks = [a for a in range(k) if (phase + a - lo) % s == 0]
        first = np.array([(phase + a - lo) // s for a in ks])
        return ks, first[:, None] + np.arange(-(-(n_out - phase) // s))[None, :] + margin

    for ry in range(min(s, out_h)):
        kys, rows = taps(ry, out_h)
        for rx in range(min(s, out_w)):
            kxs, cols = taps(rx, out_w)
            patches = padded[:, rows[:, None, :, None], cols[None, :, None, :]]  # (C, ky, kx, j, i)
            sub = np.ascontiguousarray(flipped[:, :, kys][:, :, :, kxs]).reshape(out_ch, -1)
            res = gemm(sub, patches.reshape(in_ch * len(kys) * len(kxs), -1), bias)
            out[:, ry::s, rx::s] = res.reshape(out_ch, rows.shape[1], cols.shape[1])
    return out


def channel_sums(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis of a 2-D array, in order (a product with ones: x * 1 is exact)."""
    return gemm(x, np.ones((x.shape[1], 1), dtype=x.dtype))[:, 0]


# ----------------------------------------------------------------------------- modules
def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(DTYPE).contiguous().numpy()


def _weights(module: nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    bias = None if module.bias is None else _numpy(module.bias)
    return _numpy(module.weight), bias


class _PerImage(nn.Module):
    """Applies `one` (C, H, W) -> (C', H', W') to every image of a batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.from_numpy(self.one(_numpy(image))) for image in x])


class Conv2d(_PerImage):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" \
                or isinstance(conv.padding, str):
            raise NotImplementedError(f"no exact kernel for {conv}")
        self.weight, self.bias = _weights(conv)
        self.padding = conv.padding

    def one(self, x):
        return conv2d(x, self.weight, self.bias, self.padding)

    def at(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """self(x)[:, :, pos], (B, C, count), computing those outputs only."""
        where = pos.numpy()
        return torch.stack([torch.from_numpy(conv2d(_numpy(xi), self.weight, self.bias, self.padding, where))
                            for xi in x])


class ConvTranspose2d(_PerImage):
    def __init__(self, conv: nn.ConvTranspose2d):
        super().__init__()
        k, s, p, op = conv.kernel_size, conv.stride, conv.padding, conv.output_padding
        if len({k[0], k[1]}) != 1 or len(set(s)) != 1 or len(set(p)) != 1 or len(set(op)) != 1 \
                or conv.dilation != (1, 1) or conv.groups != 1:
            raise NotImplementedError(f"no exact kernel for {conv}")
        self.weight, self.bias = _weights(conv)
        self.stride, self.padding, self.output_padding = s[0], p[0], op[0]

    def one(self, x):
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)


class Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = _weights(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        return torch.from_numpy(gemm(self.weight, np.ascontiguousarray(_numpy(x).T), self.bias).T.copy())


class Elementwise(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(elementwise(self.name, _numpy(x)))

    def extra_repr(self) -> str:
        return self.name


class LeakyReLU(nn.Module):
    def __init__(self, relu: nn.LeakyReLU):
        super().__init__()
        self.slope = relu.negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, x * self.slope)


class ExactLinearAttention(nn.Module):
    """models.mlic.LinearAttention on the exact kernels (its formula, every sum in index order)."""

    def __init__(self, attention: LinearAttention):
        super().__init__()
        self.heads, self.dim = attention.heads, attention.dim
        self.q, self.k, self.v, self.o = (convert(getattr(attention, n)) for n in "qkvo")

    def forward(self, qk_src, v_src, key_mask=None):
        out = []
        for b in range(qk_src.shape[0]):
            qk, v_in = _numpy(qk_src[b]), _numpy(v_src[b])
            h, d, n = self.heads, self.dim // self.heads, qk.shape[1] * qk.shape[2]
            q = (elementwise("elu", self.q.one(qk)) + 1).reshape(h, d, n)
            k = elementwise("elu", self.k.one(qk)) + 1
            if key_mask is not None:
                k = k * _numpy(key_mask)
            k = k.reshape(h, d, n)
            v = self.v.one(v_in).reshape(h, d, n)
            heads = []
            for i in range(h):
                kv = gemm(k[i], np.ascontiguousarray(v[i].T))                # (d, e)
                num = gemm(np.ascontiguousarray(kv.T), q[i])                 # (e, n)
                den = gemm(channel_sums(k[i])[None], q[i]) + 1e-6            # (1, n)
                heads.append(num / den)
            out.append(self.o.one(np.concatenate(heads).reshape(h * d, *qk.shape[1:])))
        return torch.from_numpy(np.stack(out))


class ExactChannelReweight(nn.Module):
    """models.mlic.ChannelReweight on the exact kernels: the mean is the sum in order / count."""

    def __init__(self, reweight: ChannelReweight):
        super().__init__()
        self.fc = convert(reweight.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        mean = torch.stack([torch.from_numpy(channel_sums(_numpy(xi).reshape(C, H * W))) for xi in x]) / (H * W)
        gates = torch.from_numpy(elementwise("sigmoid", _numpy(self.fc(mean))))
        return x * (2 * gates)[:, :, None, None]


class ExactGaussianMixture(GaussianMixture):
    """The mixture whose weights are exp(l - max l) / (e_1 + ... + e_K), on the exact exp, summed
    in component order (PyTorch's softmax rounds its exp and sum differently per CPU)."""

    def weights_of(self, logits: torch.Tensor) -> torch.Tensor:
        e = torch.from_numpy(elementwise("exp", _numpy(logits - logits.amax(-1, keepdim=True))))
        total = e[..., 0]
        for k in range(1, e.shape[-1]):
            total = total + e[..., k]
        return e / total.unsqueeze(-1)


def _gelu(m: nn.GELU) -> nn.Module:
    if m.approximate != "none":
        raise NotImplementedError(f"no exact kernel for {m}")
    return Elementwise("gelu")


_EXACT = {
    nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d, nn.Linear: Linear, nn.GELU: _gelu,
    nn.Tanh: lambda m: Elementwise("tanh"), nn.LeakyReLU: LeakyReLU, nn.Identity: lambda m: nn.Identity(),
    LinearAttention: ExactLinearAttention, ChannelReweight: ExactChannelReweight,
}


def convert(module: nn.Module) -> nn.Module:
    """The module on the exact kernels (containers converted child by child); NotImplementedError
    for a module without exact kernels."""
    if type(module) in _EXACT:
        return _EXACT[type(module)](module)
    if type(module) is nn.Sequential:
        return nn.Sequential(*map(convert, module))
    if type(module) is nn.ModuleList:
        return nn.ModuleList(map(convert, module))
    raise NotImplementedError(f"no exact kernel for {type(module).__name__}")


def supports(model: nn.Module) -> bool:
    """Whether `parameter_net` can run this model's parameter path."""
    try:
        _check(model)
        return True
    except NotImplementedError:
        return False


def _check(model: nn.Module) -> None:
    if type(model) not in PARAMETER_PATH:
        raise NotImplementedError(f"no exact parameter path for {type(model).__name__}")
    if getattr(model, "likelihood", "gaussian") not in FAMILIES:
        raise NotImplementedError(f"the {model.likelihood} family's parameters need operations without exact kernels")


def parameter_net(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameter path runs on the exact kernels, with float64 copies of
    its weights; the rest (the transforms, not for the coder) is shared with `model`."""
    _check(model)
    net = copy.copy(model)
    net._modules = dict(model._modules)  # its own, so that replacing the path leaves `model` alone
    for name in PARAMETER_PATH[type(model)]:
        net._modules[name] = convert(model._modules[name])
    if isinstance(net, MLIC):
        net.heads_at_pass_positions = True
        if isinstance(model.likelihood_family, GaussianMixture):
            family = ExactGaussianMixture(model.likelihood_family.K)
            net._modules["likelihood_family"] = family
            object.__setattr__(net, "_step_family", family)  # as MLIC keeps it: outside the module tree
    net.exact_parameters = True
    return net


def is_parameter_net(model: nn.Module) -> bool:
    """Whether `model` is a `parameter_net` (whose parameters go to the grid by quantize_params)."""
    return getattr(model, "exact_parameters", False)


# ----------------------------------------------------------------------------- the coder's grid
_SCALES = entropy.dequantize_params("gaussian", {"mean": np.zeros(entropy.GRID["n_scales"], np.int32),
                                                 "scale": np.arange(entropy.GRID["n_scales"], dtype=np.int32)})["scale"]
# a scale's code is the number of these bounds at or below it: the geometric midpoints of
# neighbouring grid scales, i.e. where log2(scale) rounds to the next step (sqrt is exact in IEEE-754)
SCALE_BOUNDS = np.sqrt(_SCALES[:-1] * _SCALES[1:])
_BOUNDS_AROUND = np.concatenate([[-np.inf], SCALE_BOUNDS, [np.inf]])  # code c holds [_BOUNDS_AROUND[c], [c + 1])
_MEAN_ONE = float(1 << entropy.GRID["mean_frac_bits"])


def quantize_params(family: str, **params) -> dict:
    """entropy.quantize_params for the families of FAMILIES by comparisons and exact arithmetic
    only: the same codes except where a scale falls within a rounding of a bound (mixture
    weights as there, their sum taken in component order)."""
    keys = ("weight", "mean", "scale") if family == "gmm" else ("mean", "scale")
    if family not in FAMILIES or set(params) != set(keys):
        raise entropy.EntropyCodingError(f"exact codes cover {FAMILIES} ({', '.join(keys)}), not {family} {sorted(params)}")
    arrays = {k: np.asarray(params[k], dtype=np.float64) for k in keys}
    if len({a.shape for a in arrays.values()}) != 1 or not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise entropy.EntropyCodingError("parameters must be finite arrays of one shape")
    if np.any(arrays["scale"] <= 0):
        raise entropy.EntropyCodingError("scale must be > 0")
    limit = 2**31 - 1
    codes = {"mean": np.clip(np.rint(arrays["mean"] * _MEAN_ONE), -limit, limit).astype(np.int32),
             "scale": scale_codes(arrays["scale"])}
    if family == "gmm":
        codes["weight"] = entropy.mixture_weight_codes(arrays["weight"], in_component_order=True)
    return codes


def scale_codes(scale: np.ndarray) -> np.ndarray:
    """The number of SCALE_BOUNDS at or below each scale (np.searchsorted(..., side="right")),
    4.6x faster on 900,000 scales: the grid step from log2, then moved by comparisons until each scale lies
    between its code's bounds, so that log2's rounding never decides a code."""
    grid = entropy.GRID
    code = np.clip(np.floor((np.log2(scale) - grid["scale_log2_min"]) * grid["scale_steps_per_octave"] + 0.5),
                   0, grid["n_scales"] - 1).astype(np.intp)
    while True:
        move = (scale >= _BOUNDS_AROUND[code + 1]).astype(np.intp) - (scale < _BOUNDS_AROUND[code])
        if not move.any():
            return code.astype(np.int32)
        code += move
