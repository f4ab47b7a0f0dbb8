"""Fitting one group of frames: the INR decoder and the frame encoder trained together
(quantization-aware after a warm-up), then quantized on a fixed per-channel step grid.

Group 0 trains from scratch; every later group starts from the previous group's decoded
weights, with a smaller learning rate, and is coded as integer deltas against them. The
weight step codes are fixed for the clip when QAT starts (or at the end, when too few epochs
reach it), so that deltas stay integers; their scale is set so that group 0's weights code to
their planned bytes, and each group's embedding steps so that its payload codes to its byte
budget (codec.video.rate). Each epoch is checkpointed in the resume store.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from codec.video import rate
from codec.video.bitstream import GroupData, dequantize, pack_weights, split_codes
from codec.video.resume import ResumeStore, load_optimizer, optimizer_tensors
from models.inr import EmbeddingEncoder, HNeRVDecoder, fake_quant, step_from_code

EMB_BITS = 6      # bit depth of the embeddings
# A warm-started group's learning-rate factor: LATER_LR at LATER_EPOCHS epochs (the default
# effort's), in inverse proportion to its epochs otherwise (at most 1), so that its weights
# drift from the previous group's about as far at every effort: the drift is coded as deltas
# within a byte budget, and what exceeds it is thrown away (docs/video.md, "Rate control")
LATER_LR = 0.075
LATER_EPOCHS = 50
GRAD_CLIP = 0.5   # gradient-norm clipping (0: off)
WARMUP = 100      # warm-up steps of group 0
ENCODE_BATCH = 8  # frames per frame-encoder pass when computing all of a group's embeddings
RECALIBRATE = 5   # epochs between two choices of the embedding step scale during training
# An epoch whose training MSE is COLLAPSE_DB above the best epoch's is a collapse (bunny
# 320x180 at quality 6, lr 1e-2: 28.9 -> 22.6 -> 12.4 dB, a constant picture it never left):
# the fit returns to the best epoch's state and goes on at half the learning rate.
COLLAPSE_DB = 6.0
RATE_LAMBDA = 0.0  # weight of the rate term (bits per pixel under codec.video.rate.laplace_bits) in the loss


@dataclass
class FitSettings:
    """The clip-wide settings of the fit (recorded in the resume fingerprint)."""
    bits: int    # weight bit depth
    seed: int
    lr: float    # peak learning rate of group 0
    batch: int   # frames per step


@dataclass
class GroupJob:
    """One group to fit."""
    index: int                          # group index (0: trained from scratch)
    frames: torch.Tensor                # (n, 3, H', W') in [0, 1], padded to the network's output
    height: int                         # the frames' own size: the loss ignores the padding
    width: int
    epochs: int
    step_codes: np.ndarray | None       # weight step codes of the clip (None: not chosen yet)
    previous_ints: list | None          # the previous group's integer weights (None for group 0)
    byte_budget: float                  # bytes this group's payload should take
    weight_budget: float                # bytes its weights (group 0) or weight deltas should take


def load_weights(net: HNeRVDecoder, specs, tensors: list[torch.Tensor]) -> None:
    """Load the decoder's tensors, in file order (`specs`)."""
    net.load_state_dict({name: t.reshape(shape) for (name, shape, _), t in zip(specs, tensors)}, strict=True)


def _steps(specs, step_codes: np.ndarray) -> dict:
    """The float32 step tensors of the decoder's tensors, broadcastable, by name."""
    return {name: step_from_code(torch.from_numpy(c)).reshape(s)
            for (name, _, s), c in zip(specs, split_codes(step_codes, specs))}


def _embed(encoder: EmbeddingEncoder, frames: torch.Tensor) -> torch.Tensor:
    return torch.cat([encoder(frames[i:i + ENCODE_BATCH]) for i in range(0, frames.shape[0], ENCODE_BATCH)])


def _model_tensors(decoder: HNeRVDecoder, encoder: EmbeddingEncoder) -> dict:
    tensors = {f"dec.{k}": v for k, v in decoder.state_dict().items()}
    tensors.update({f"enc.{k}": v for k, v in encoder.state_dict().items()})
    return tensors


def load_model_tensors(decoder: HNeRVDecoder, encoder: EmbeddingEncoder, tensors: dict) -> None:
    """The inverse of the "dec."/"enc." part of a resume store's tensors."""
    decoder.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("dec.")})
    encoder.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("enc.")})


def finished_group_tensors(decoder, encoder, step_codes: np.ndarray, ints: list, groups_done: int) -> dict:
    """What the resume store keeps after a finished group (`ResumeStore.save_group`)."""
    tensors = _model_tensors(decoder, encoder)
    tensors["wcodes"] = torch.from_numpy(np.asarray(step_codes, dtype=np.int64))
    tensors["done"] = torch.tensor(groups_done)
    tensors.update({f"ints.{i}": torch.from_numpy(q.astype(np.int64)) for i, q in enumerate(ints)})
    return tensors


def _coded(params: dict, steps: dict, prev: dict | None, zone: float | None, levels: int) -> dict:
    """The integers the group codes for each decoder tensor (as float tensors): group 0's
    rounded weights, or a later group's previous integers plus its dead-zoned changes."""
    with torch.no_grad():
        if prev is None:
            return {k: torch.round(params[k] / s).clamp(-levels, levels) for k, s in steps.items()}
        return {k: rate.delta_ints(params[k], s, prev[k], zone, levels) for k, s in steps.items()}


def _as_ints(coded: dict, names: list[str]) -> list[np.ndarray]:
    return [coded[k].to(torch.int64).numpy() for k in names]


def _rate_bpp(params: dict, steps: dict, prev: dict | None, pixels: int) -> torch.Tensor:
    """The differentiable rate of the group's coded weights (or deltas to the previous group's),
    in bits per pixel of the group. (Embeddings are left out: they are mostly coded as temporal
    differences, which a per-value density does not model, and the rate control sets their size.)"""
    bits = 0.0
    for name, step in steps.items():
        k = params[name] / step
        k = k + (torch.round(k) - k).detach()
        bits = bits + rate.laplace_bits(k if prev is None else k - prev[name])
    return bits / pixels


def _embedding_budget(job: GroupJob, n: int, ints: list[np.ndarray]) -> float:
    """The bytes left for the embeddings once the group's weights (or deltas) are coded."""
    weights = ints if job.previous_ints is None else [a - b for a, b in zip(ints, job.previous_ints)]
    return job.byte_budget - len(pack_weights(n, weights))


def fit_group(decoder: HNeRVDecoder, encoder: EmbeddingEncoder, specs, settings: FitSettings, job: GroupJob,
              resume: ResumeStore, bar=None) -> tuple[np.ndarray, list[np.ndarray], GroupData]:
    """Train decoder and encoder on one group (QAT), quantize, and snap the decoder to its
    decoded weights. Returns (the clip's step codes, the integer weights, the group's data)."""
    names = [n for n, _, _ in specs]
    params = dict(decoder.named_parameters())
    opt = torch.optim.Adam(list(decoder.parameters()) + list(encoder.parameters()), lr=settings.lr)
    gi, xp, n_epochs, step_codes = job.index, job.frames, job.epochs, job.step_codes
    n = xp.shape[0]
    warm = n_epochs // 2 if (gi == 0 and step_codes is None) else 0
    start, emb_scale, zone, lr_scale = 0, None, None, 1.0
    checkpoint = resume.load_checkpoint(gi)
    if checkpoint is not None:
        meta, tensors = checkpoint
        load_model_tensors(decoder, encoder, tensors)
        load_optimizer(opt, tensors)
        start = meta["epoch"]
        emb_scale, zone, lr_scale = meta.get("emb_scale"), meta.get("zone"), meta.get("lr_scale", 1.0)
        if "wcodes" in tensors:
            step_codes = tensors["wcodes"].numpy().astype(np.int64)
        if bar:
            bar.update(start)
    batches = -(-n // settings.batch)
    total_steps = n_epochs * batches
    sched_step = start * batches
    steps = None
    levels = rate.RANGE * (2 ** (settings.bits - 1) - 1)
    emb_levels = rate.RANGE * (2 ** (EMB_BITS - 1) - 1)
    prev = None if job.previous_ints is None else {
        name: torch.from_numpy(q.astype(np.float32)) for name, q in zip(names, job.previous_ints)}
    base_lr = settings.lr if gi == 0 else settings.lr * min(1.0, LATER_LR * LATER_EPOCHS / n_epochs)
    best_loss, best_tensors = math.inf, None
    for epoch in range(start, n_epochs):
        if epoch >= warm and step_codes is None:
            step_codes = rate.weight_codes(params, specs, settings.bits, job.weight_budget)
        if step_codes is not None and steps is None:
            steps = _steps(specs, step_codes)
        emb_step = None
        if steps is not None:  # the dead zone and embedding steps of this epoch (every frame of the group)
            with torch.no_grad():
                e_all = _embed(encoder, xp)
                if emb_scale is None or epoch % RECALIBRATE == 0:
                    if prev is not None:
                        zone = rate.delta_zone(params, steps, prev, n, levels, job.weight_budget)
                    ints = _as_ints(_coded(params, steps, prev, zone, levels), names)
                    emb_scale = rate.embedding_scale(e_all, EMB_BITS, _embedding_budget(job, n, ints))
                emb_step = step_from_code(rate.scaled_codes(e_all.transpose(0, 1), EMB_BITS, emb_scale))
                emb_step = emb_step.reshape(1, -1, 1, 1)
        gen = torch.Generator().manual_seed((settings.seed * 1_000_003 + gi) * 100_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        loss_sum, count = 0.0, 0
        for i in range(0, n, settings.batch):
            idx = perm[i:i + settings.batch]
            lr = lr_scale * base_lr * 0.5 * (1 + math.cos(math.pi * sched_step / max(total_steps, 1)))
            lr = lr * min(1.0, (sched_step + 1) / max(1, min(WARMUP, total_steps // 20))) if gi == 0 else lr
            for pg in opt.param_groups:
                pg["lr"] = lr
            sched_step += 1
            xb = xp[idx]
            e = encoder(xb)
            if steps is not None:
                e = fake_quant(e, emb_step, emb_levels)
                if prev is None:
                    quantized = {name: fake_quant(params[name], steps[name], levels) for name in names}
                else:  # the later group's dead-zoned integers, straight-through
                    coded = _coded(params, steps, prev, zone, levels)
                    quantized = {k: params[k] + (coded[k] * steps[k] - params[k]).detach() for k in names}
                y = torch.func.functional_call(decoder, quantized, (e,))
            else:
                y = decoder(e)
            loss = F.mse_loss(y[:, :, :job.height, :job.width], xb[:, :, :job.height, :job.width])
            if steps is not None and RATE_LAMBDA:
                loss = loss + RATE_LAMBDA * _rate_bpp(params, steps, prev, n * job.height * job.width)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if GRAD_CLIP:
                torch.nn.utils.clip_grad_norm_(list(decoder.parameters()) + list(encoder.parameters()), GRAD_CLIP)
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            count += len(idx)
        if bar:
            bar.set_postfix(group=f"{gi}", psnr=f"{-10 * math.log10(max(loss_sum / count, 1e-10)):.2f}")
            bar.update(1)
        tensors = _model_tensors(decoder, encoder)
        tensors.update(optimizer_tensors(opt))
        epoch_loss = loss_sum / count
        if best_tensors is not None and epoch_loss > best_loss * 10 ** (COLLAPSE_DB / 10):
            tensors = {k: v.clone() for k, v in best_tensors.items()}  # collapsed: back to the best epoch
            load_model_tensors(decoder, encoder, tensors)
            load_optimizer(opt, tensors)
            lr_scale /= 2  # and on at half the rate
        elif epoch_loss < best_loss:
            best_loss, best_tensors = epoch_loss, {k: v.clone() for k, v in tensors.items()}
        if step_codes is not None:
            tensors["wcodes"] = torch.from_numpy(np.asarray(step_codes, dtype=np.int64))
        resume.save_checkpoint({"group": gi, "epoch": epoch + 1, "emb_scale": emb_scale, "zone": zone,
                                "lr_scale": lr_scale}, tensors)
    if step_codes is None:  # epochs too few to reach QAT
        step_codes = rate.weight_codes(params, specs, settings.bits, job.weight_budget)
    # ---- quantize weights on the fixed step grid; snap the network to the decoded weights;
    # the embedding steps that land the payload on its budget
    codes = split_codes(step_codes, specs)
    steps = steps or _steps(specs, step_codes)
    with torch.no_grad():
        if prev is not None:
            zone = rate.delta_zone(params, steps, prev, n, levels, job.weight_budget)
        ints = _as_ints(_coded(params, steps, prev, zone, levels), names)
        load_weights(decoder, specs, [dequantize(q, c, s) for q, c, (_, _, s) in zip(ints, codes, specs)])
        encoder.eval()
        e = _embed(encoder, xp)
        encoder.train()
        emb_scale = rate.embedding_scale(e, EMB_BITS, _embedding_budget(job, n, ints))
        emb_codes = rate.scaled_codes(e.transpose(0, 1), EMB_BITS, emb_scale).numpy().ravel()
        emb_ints = rate.quantize(e, torch.from_numpy(emb_codes), (1, -1, 1, 1), emb_levels)
    weights = ints if job.previous_ints is None else [a - b for a, b in zip(ints, job.previous_ints)]
    group = GroupData(n, [w.astype(np.int32) for w in weights], emb_codes.astype(np.uint8), emb_ints.astype(np.int32))
    return step_codes, ints, group
