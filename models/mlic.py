"""MLIC++/MLICv2-style multi-reference entropy model, variable rate, pluggable likelihood.

Transforms: stride-16 analysis/synthesis of strided convolutions, residual blocks and
MetaFormer-style token-mixing blocks (channel LayerNorm + depthwise 7x7 token mixer +
1x1 MLP, as MLICv2's meta-transformer blocks); a hyperprior (z at stride 64, compressai
EntropyBottleneck) whose synthesis gives 2 * M "hyper" feature channels, 2 * M / S per slice.

Entropy model of y: M channels split into S slices of C_s = M / S channels, coded slice by
slice, each slice in two checkerboard passes: anchors ((row + col) even) then non-anchors.
Contexts of slice s:
  support_s (used by both passes and by LRP), 6 C_s channels = [hyper_s | cc_s | gc_s]:
    hyper_s   the slice's share of the hyper features;
    cc_s      channel context: convolutions over the earlier (LRP-corrected) slices after
              MLICv2-style channel reweighting (per-channel gates from their global average);
              for s = 0: a convolution over all hyper features;
    gc_s      global inter-slice context: linear attention over the earlier slices;
              for s = 0: hyperprior-guided global context (linear attention over the hyper
              features);
  non-anchor pass only, also:
    local     local spatial context: a 5x5 convolution over the slice's decoded anchors
              (non-anchors are zero, so it is a checkerboard context);
    intra     global intra-slice context: linear attention whose queries (all positions)
              and keys (anchor positions only) come from the previous slice (for s = 0 from
              hyper_s), and whose values are the slice's decoded anchors: the similarity
              structure of the fully known previous slice carries the anchors to the
              non-anchor positions (MLIC++'s global spatial context), in O(HW).
  LRP: after both passes of slice s, y_hat_s += 0.5 tanh(lrp_s([support_s | y_hat_s])).
       The within-slice contexts (local, intra) see the uncorrected anchor values (the ones
       the coder sends); later slices (cc, gc, intra queries/keys) and the synthesis see the
       LRP-corrected slice. `coding_steps` returns the LRP-corrected y_hat.

Variable rate as in models/hyperprior.py: per-quality gain vectors on y (quality in
[1, levels], fractional qualities interpolate), DEFAULT_LAMBDAS.

Coding: `coding_steps` follows the protocol of models/coding.py. Steps, in order: for s in
0..S-1: "s{s}/anchor", "s{s}/nonanchor"; for the mvgmm family each pass is split per
channel-in-group, "s{s}/anchor/j{j}" for j in 0..G-1 (mask: channels s*C_s + g*G + j of every
group g), with params the univariate-GMM conditional of element j given the already decoded
elements 0..j-1 of its group (conditionals computed inside `coding_steps`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck
from compressai.models.utils import conv, deconv

from models.coding import CodingStep
from models.hyperprior import DEFAULT_LAMBDAS, GainUnit, VariableRate, gain_init
from models.layers import LayerNorm2d, apply
from models.likelihoods import MultivariateGaussianMixture, make_family, univariate_of

MLIC_PRESETS: dict[str, dict] = {
    # trainable on a 2-core CPU (shipped; the default until 2026-12-01)
    "mlic-tiny": {"N": 48, "M": 96, "slices": 4, "Nz": 48, "mixer_blocks": 1},
    # shipped (the default until 2026-12-02): mlic-tiny with twice the latent channels. With M = 96 the
    # transforms alone cap Kodak at ~29.7 dB at every rate (a block PCA keeping 96 of the 768
    # values of a 16x16x3 block gives 30.9 dB on Kodak, keeping 192 gives 37.1 dB), so the
    # latent width, not N, is what buys high-rate quality; the extra cost is at 1/16 resolution
    "mlic-small": {"N": 48, "M": 192, "slices": 4, "Nz": 64, "mixer_blocks": 1},
    # the shipped default, mlic-small with twice the transform width: its transforms, not the entropy model (which
    # holds 85 % of mlic-small's parameters), cap its high rates; `train --init` widens
    # mlic-small's weights into it as the same function (codec/train/warmstart.py: init_from)
    "mlic-medium": {"N": 96, "M": 192, "slices": 4, "Nz": 64, "mixer_blocks": 1},
    # the paper's dimensions (MLIC++: N=192, M=320, 10 slices)
    "mlic++": {"N": 192, "M": 320, "slices": 10, "Nz": 192, "mixer_blocks": 2},
}


# ----------------------------------------------------------------------------- blocks
class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch // 2, 1), nn.GELU(),
            nn.Conv2d(ch // 2, ch // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(ch // 2, ch, 1))

    def forward(self, x):
        return x + self.body(x)


class TokenMixerBlock(nn.Module):
    """MetaFormer block: x + DWConv7x7(LN(x)); x + MLP(LN(x))."""

    def __init__(self, ch: int, expansion: int = 2):
        super().__init__()
        self.norm1 = LayerNorm2d(ch)
        self.mixer = nn.Conv2d(ch, ch, 7, padding=3, groups=ch)
        self.norm2 = LayerNorm2d(ch)
        self.mlp = nn.Sequential(nn.Conv2d(ch, ch * expansion, 1), nn.GELU(), nn.Conv2d(ch * expansion, ch, 1))

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LinearAttention(nn.Module):
    """softmax-free attention with feature map elu + 1 (Katharopoulos et al. 2020):
    out_i = phi(q_i)^T sum_j phi(k_j) v_j^T / phi(q_i)^T sum_j phi(k_j), O(HW) in the number
    of positions; `key_mask` (H, W) restricts j to the masked positions."""

    def __init__(self, qk_in: int, v_in: int, out: int, dim: int, heads: int = 2):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.q = nn.Conv2d(qk_in, dim, 1)
        self.k = nn.Conv2d(qk_in, dim, 1)
        self.v = nn.Conv2d(v_in, dim, 1)
        self.o = nn.Conv2d(dim, out, 1)

    def forward(self, qk_src, v_src, key_mask=None):
        B, _, H, W = qk_src.shape
        h, d = self.heads, self.dim // self.heads
        q = (F.elu(self.q(qk_src)) + 1).reshape(B, h, d, H * W)
        k = F.elu(self.k(qk_src)) + 1
        if key_mask is not None:
            k = k * key_mask.to(k.dtype)
        k = k.reshape(B, h, d, H * W)
        v = self.v(v_src).reshape(B, h, d, H * W)
        kv = torch.einsum("bhdn,bhen->bhde", k, v)
        num = torch.einsum("bhdn,bhde->bhen", q, kv)
        den = torch.einsum("bhdn,bhd->bhn", q, k.sum(-1)).unsqueeze(2) + 1e-6
        return self.o((num / den).reshape(B, h * d, H, W))

    def attention_macs(self, B: int, n: int) -> int:
        d = self.dim // self.heads
        return 2 * B * self.heads * d * d * n + B * self.heads * d * n


class ChannelReweight(nn.Module):
    """MLICv2-style channel reweighting: gates in (0, 2) per channel from the global average."""

    def __init__(self, ch: int):
        super().__init__()
        hid = max(8, ch // 4)
        self.fc = nn.Sequential(nn.Linear(ch, hid), nn.GELU(), nn.Linear(hid, ch))

    def forward(self, x):
        return x * (2 * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None])


def _head(cin: int, cout: int, hid: int | None = None) -> nn.Sequential:
    hid = hid or max(cout, (2 * cin) // 3)
    return nn.Sequential(nn.Conv2d(cin, hid, 1), nn.GELU(), nn.Conv2d(hid, hid, 1), nn.GELU(),
                         nn.Conv2d(hid, cout, 1))


def checkerboard(h: int, w: int, device=None) -> torch.Tensor:
    """(h, w) bool, True at the anchors: (row + col) even."""
    r = torch.arange(h, device=device).view(-1, 1)
    c = torch.arange(w, device=device).view(1, -1)
    return (r + c) % 2 == 0


# ----------------------------------------------------------------------------- model
class MLIC(VariableRate, nn.Module):
    stride = 64  # y at stride 16, z at stride 64

    def __init__(self, N: int = 64, M: int = 128, slices: int = 4, Nz: int | None = None,
                 mixer_blocks: int = 1, likelihood: str = "gaussian", K: int = 3, G: int = 2,
                 beta_mode: str = "element", attn_dim: int | None = None, lambdas=DEFAULT_LAMBDAS):
        super().__init__()
        if M % slices:
            raise ValueError(f"M={M} is not a multiple of slices={slices}")
        self.N, self.M, self.S = N, M, slices
        self.Cs = Cs = M // slices
        Nz = Nz or N
        self.lambdas = tuple(lambdas)
        self.likelihood = likelihood
        self.likelihood_family = make_family(likelihood, channels=M, K=K, G=G, beta_mode=beta_mode)
        if isinstance(self.likelihood_family, MultivariateGaussianMixture) and Cs % G:
            raise ValueError(f"slice width {Cs} is not a multiple of the mvgmm group size {G}")
        step_family = univariate_of(self.likelihood_family)
        if step_family is self.likelihood_family:
            # the same module: keep it out of the module tree so that state_dict does not list
            # its tensors twice (safetensors refuses tensors that share memory)
            object.__setattr__(self, "_step_family", step_family)
        else:
            self._step_family = step_family
        P = self.likelihood_family.num_params(Cs)
        attn_dim = attn_dim or max(16, Cs)

        def mix(ch):
            return [TokenMixerBlock(ch) for _ in range(mixer_blocks)]

        self.g_a = nn.Sequential(
            conv(3, N, 5, 2), ResidualBlock(N),
            conv(N, N, 3, 2), ResidualBlock(N), *mix(N),
            conv(N, N, 3, 2), ResidualBlock(N), *mix(N),
            conv(N, M, 3, 2), *mix(M))
        self.g_s = nn.Sequential(
            *mix(M), deconv(M, N, 3, 2), ResidualBlock(N), *mix(N),
            deconv(N, N, 3, 2), ResidualBlock(N), *mix(N),
            deconv(N, N, 3, 2), ResidualBlock(N),
            deconv(N, 3, 5, 2))
        self.h_a = nn.Sequential(
            conv(M, N, 3, 1), nn.GELU(), conv(N, N, 5, 2), nn.GELU(), conv(N, Nz, 5, 2))
        self.h_s = nn.Sequential(
            deconv(Nz, N, 5, 2), nn.GELU(), deconv(N, N, 5, 2), nn.GELU(),
            conv(N, 2 * M, 3, 1))
        self.gain = GainUnit(len(self.lambdas), M, gain_init(self.lambdas))
        self.inverse_gain = GainUnit(len(self.lambdas), M, gain_init(self.lambdas, inverse=True))
        self.entropy_bottleneck = EntropyBottleneck(Nz)

        c2 = 2 * Cs
        self.channel_ctx = nn.ModuleList()
        self.reweight = nn.ModuleList()
        self.inter_ctx = nn.ModuleList()
        for s in range(slices):
            cin = 2 * M if s == 0 else s * Cs
            self.reweight.append(nn.Identity() if s == 0 else ChannelReweight(cin))
            k = 1 if s == 0 else 3  # hyper features are already spatially smooth
            self.channel_ctx.append(nn.Sequential(
                nn.Conv2d(cin, c2, k, padding=k // 2), nn.GELU(), nn.Conv2d(c2, c2, k, padding=k // 2)))
            self.inter_ctx.append(LinearAttention(cin, cin, c2, attn_dim))
        self.local_ctx = nn.ModuleList(nn.Conv2d(Cs, c2, 5, padding=2) for _ in range(slices))
        self.intra_ctx = nn.ModuleList(
            LinearAttention(c2 if s == 0 else Cs, Cs, c2, attn_dim) for s in range(slices))
        # hidden widths are those of the Gaussian model of the same size, whatever the family,
        # so that `train --init` carries a trained Gaussian's heads over to any family
        self.anchor_head = nn.ModuleList(_head(3 * c2, P, max(2 * Cs, 2 * c2)) for _ in range(slices))
        self.nonanchor_head = nn.ModuleList(_head(5 * c2, P, max(2 * Cs, 10 * c2 // 3)) for _ in range(slices))
        self.lrp = nn.ModuleList(_head(3 * c2 + Cs, Cs) for _ in range(slices))
        # a module (no weights), so that codec.exact can swap in its CPU-independent tanh
        self.lrp_squash = nn.Tanh()

    def from_gaussian(self, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        """The tensor `name` of a Gaussian model of this shape, as this model's family needs it
        (the last layers of the parameter heads; see LikelihoodFamily.head_rows_from_gaussian),
        or None where it cannot be carried over."""
        parts = name.split(".")  # e.g. anchor_head.2.4.weight: slice 2, layer 4 (the last)
        is_last_layer = (parts[0] in ("anchor_head", "nonanchor_head") and len(parts) == 4
                         and int(parts[2]) == len(self.anchor_head[0]) - 1)
        if not is_last_layer or tensor.shape[0] != 2 * self.Cs:
            return None
        return self.likelihood_family.head_rows_from_gaussian(tensor)

    # --- the pieces the codec calls -------------------------------------------------
    def analysis(self, x: torch.Tensor, quality: torch.Tensor, run=apply) -> torch.Tensor:
        return run(self.g_a, x) * self.gain(quality)

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        return self.h_a(y)

    def hyper_synthesis(self, z_hat: torch.Tensor) -> torch.Tensor:
        """The 2M hyper feature channels (slice s uses channels 2*C_s*s .. 2*C_s*(s+1))."""
        return self.h_s(z_hat)

    def synthesis(self, y_hat: torch.Tensor, quality: torch.Tensor, run=apply) -> torch.Tensor:
        return run(self.g_s, y_hat * self.inverse_gain(quality))

    # --- the context model, one sequential procedure for training and coding ----------
    def _support(self, s: int, hyper: torch.Tensor, done: list) -> torch.Tensor:
        c2 = 2 * self.Cs
        hyper_s = hyper[:, s * c2:(s + 1) * c2]
        src = hyper if s == 0 else self.reweight[s](torch.cat(done, 1))
        return torch.cat([hyper_s, self.channel_ctx[s](src), self.inter_ctx[s](src, src)], 1)

    # codec.exact sets this on its copy: a pass reads the parameter heads' output at its own
    # positions only, and the heads are pointwise, so computing them (and the local context
    # that feeds them) there alone halves their cost. Off elsewhere: the float64 PyTorch route
    # of coder versions 2 and 3 must keep its roundings.
    heads_at_pass_positions = False

    def _head(self, head: nn.Module, parts: list, pos: torch.Tensor) -> torch.Tensor:
        """head(cat(parts)), each part a tensor or a (convolution, input) pair; exact at the
        positions `pos` (H, W), zero elsewhere when heads_at_pass_positions (then the
        convolutions are codec.exact's, whose `at(x, pos)` gives their output at pos)."""
        if not self.heads_at_pass_positions:
            return head(torch.cat([p if torch.is_tensor(p) else p[0](p[1]) for p in parts], 1))
        x = torch.cat([p[:, :, pos] if torch.is_tensor(p) else p[0].at(p[1], pos) for p in parts], 1)
        out = head(x.unsqueeze(-1))[..., 0]  # the positions as an n x 1 image
        full = out.new_zeros(*out.shape[:2], *pos.shape)
        full[:, :, pos] = out
        return full

    def _steps(self, hyper: torch.Tensor):
        """Yields (name, mask, params) with family params (univariate: for mvgmm the
        conditional GMM) indexed in y[mask] order; receives the values; returns y_hat."""
        fam = self.likelihood_family
        mv = isinstance(fam, MultivariateGaussianMixture)
        B, _, H, W = hyper.shape
        M, Cs = self.M, self.Cs
        anchor = checkerboard(H, W, hyper.device)
        y_hat = hyper.new_zeros(B, M, H, W)
        done: list[torch.Tensor] = []
        for s in range(self.S):
            ch = slice(s * Cs, (s + 1) * Cs)
            support = self._support(s, hyper, done)
            for kind, pos in (("anchor", anchor), ("nonanchor", ~anchor)):
                if kind == "anchor":
                    head_out = self._head(self.anchor_head[s], [support], pos)
                else:
                    cur = y_hat[:, ch] * anchor.to(y_hat.dtype)
                    ref = hyper[:, 2 * Cs * s:2 * Cs * (s + 1)] if s == 0 else done[-1]
                    head_out = self._head(self.nonanchor_head[s], [
                        support, (self.local_ctx[s], cur), self.intra_ctx[s](ref, cur, key_mask=anchor)], pos)
                params = fam.params_from_head(head_out, channel_offset=s * Cs)
                if not mv:
                    sel = pos.expand(B, Cs, H, W)
                    mask = torch.zeros(B, M, H, W, dtype=torch.bool, device=hyper.device)
                    mask[:, ch] = sel
                    values = yield f"s{s}/{kind}", mask, {k: v[sel] for k, v in params.items()}
                    y_hat = y_hat.masked_scatter(mask, values.to(y_hat.dtype))
                    continue
                G, ng = fam.G, Cs // fam.G
                sel = pos.expand(B, ng, H, W)
                for j in range(G):
                    grouped = y_hat[:, ch].reshape(B, ng, G, H, W).permute(0, 1, 3, 4, 2)
                    cv = fam.conditional_coding_values(params, grouped[..., :j], j)
                    mask = torch.zeros(B, M, H, W, dtype=torch.bool, device=hyper.device)
                    cmask = torch.zeros(B, Cs, H, W, dtype=torch.bool, device=hyper.device)
                    cmask[:, j::G] = sel
                    mask[:, ch] = cmask
                    values = yield f"s{s}/{kind}/j{j}", mask, {k: v[sel] for k, v in cv.items()}
                    y_hat = y_hat.masked_scatter(mask, values.to(y_hat.dtype))
            y_s = y_hat[:, ch]
            done.append(y_s + 0.5 * self.lrp_squash(self.lrp[s](torch.cat([support, y_s], 1))))
        return torch.cat(done, 1)

    def coding_steps(self, z_hat: torch.Tensor, quality: torch.Tensor | None = None):
        """Generator of CodingStep; send() each step's y_hat values; returns the final
        (LRP-corrected) y_hat. `quality` is accepted for symmetry: the context model does
        not depend on it (the gains act in analysis/synthesis)."""
        fam = self._step_family
        gen = self._steps(self.hyper_synthesis(z_hat))
        try:
            name, mask, params = next(gen)
            while True:
                values = yield CodingStep(name, mask, fam.coding_values(params), fam.name,
                                          fam.symbols_are_residuals)
                name, mask, params = gen.send(values)
        except StopIteration as stop:
            return stop.value

    # --- training --------------------------------------------------------------------
    # the modules that decide the reconstruction from the image (with the snapped means, which
    # move it by much less than a quantization step): frozen by `train --train-only entropy`
    RECONSTRUCTION = ("g_a", "g_s", "gain", "inverse_gain", "lrp")

    def forward(self, x: torch.Tensor, quality: torch.Tensor, rate_only: bool = False) -> dict:
        """Rate from additive-noise likelihoods (training) or from the rounded values
        (eval); y_hat by straight-through rounding, built through the same steps the
        coder follows. `rate_only`: the likelihoods alone, y computed without gradients and
        no synthesis (training the entropy model alone)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not rate_only):
            y = self.analysis(x, quality)
        return self.forward_latents(y, self.hyper_analysis(y), quality, synthesize=not rate_only)

    def forward_latents(self, y: torch.Tensor, z: torch.Tensor, quality: torch.Tensor, rounding=None,
                        synthesize: bool = True) -> dict:
        """The pass from given latents. rounding=None: as in training; otherwise `rounding`
        (a soft rounding, for refinement) gives z_hat, y_hat and the rates alike. Without
        `synthesize`, no "x_hat"."""
        z_hat, z_lik = self.z_likelihoods(z, rounding)
        fam = self._step_family
        y_lik = torch.ones_like(y)
        gen = self._steps(self.hyper_synthesis(z_hat))
        try:
            name, mask, params = next(gen)
            while True:
                y_sel = y[mask]
                y_q = fam.quantize(y_sel, params, rounding)
                if self.training and rounding is None:
                    y_tilde = y_sel + torch.empty_like(y_sel).uniform_(-0.5, 0.5)
                else:
                    y_tilde = y_q
                y_lik = y_lik.masked_scatter(mask, fam.likelihood(y_tilde, params))
                name, mask, params = gen.send(y_q)
        except StopIteration as stop:
            y_hat = stop.value
        out = {"likelihoods": {"y": y_lik, "z": z_lik}}
        if synthesize:
            out["x_hat"] = self.synthesis(y_hat, quality)
        return out


def build_mlic(preset: str, likelihood: str = "gaussian", **kwargs) -> MLIC:
    """An MLIC model from a preset name and a likelihood family."""
    if preset not in MLIC_PRESETS:
        raise ValueError(f"unknown MLIC preset {preset!r}; choose from {', '.join(MLIC_PRESETS)}")
    return MLIC(**{**MLIC_PRESETS[preset], "likelihood": likelihood, **kwargs})


def count_macs(model: nn.Module, height: int = 256, width: int = 256) -> int:
    """Multiply-accumulates of one eval forward pass on a (1, 3, height, width) image (of this
    project's models and CompressAI's):
    convolutions, transposed convolutions, linear layers and the attention products
    (normalisations, activations and the likelihoods are not counted). Per pixel:
    divide by height * width."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.ConvTranspose2d):
            total[0] += inp[0].numel() * mod.out_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Conv2d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features
        elif isinstance(mod, LinearAttention):
            total[0] += mod.attention_macs(out.shape[0], out.shape[2] * out.shape[3])

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, LinearAttention))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.rand(1, 3, height, width)
            model(x, torch.tensor([1.0])) if hasattr(model, "levels") else model(x)  # variable rate or not
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]
