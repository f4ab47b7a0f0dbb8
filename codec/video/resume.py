"""The video encoder's resume store: an interrupted encode continues where it stopped.

Layout of `resume_dir`: meta.json (the arguments; a store made for other arguments is
refused), group_NNNNN.bin (finished group payloads), state.safetensors (decoder, encoder,
step codes and integer weights after the last finished group), ckpt.safetensors + ckpt.json
(the group in progress, with its optimizer state, saved every epoch). Every file is written
atomically, so a kill at any moment leaves a usable store.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from codec.errors import NeurocodecError
from codec.files import write_atomic


def _safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


class ResumeStore:
    """Finished groups and the group in progress; with `root` None it stores nothing."""

    def __init__(self, root, fingerprint: dict):
        self.root = Path(root) if root else None
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        meta = self.root / "meta.json"
        if meta.exists():
            old = json.loads(meta.read_text())
            if old != fingerprint:
                raise NeurocodecError(f"resume directory {self.root} holds state for other arguments "
                                      f"({old}); use another directory")
        else:
            write_atomic(meta, json.dumps(fingerprint, sort_keys=True).encode())

    def group_payload(self, gi: int) -> bytes | None:
        if self.root is None:
            return None
        f = self.root / f"group_{gi:05d}.bin"
        return f.read_bytes() if f.exists() else None

    def save_group(self, gi: int, payload: bytes, tensors: dict) -> None:
        """Group `gi` is finished: its payload, and the state the next group starts from."""
        if self.root is None:
            return
        write_atomic(self.root / f"group_{gi:05d}.bin", payload)
        write_atomic(self.root / "state.safetensors", _safetensors_bytes(tensors))
        (self.root / "ckpt.json").unlink(missing_ok=True)

    def load_state(self) -> dict | None:
        if self.root is None or not (self.root / "state.safetensors").exists():
            return None
        return _load_safetensors(self.root / "state.safetensors")

    def save_checkpoint(self, meta: dict, tensors: dict) -> None:
        """The group in progress (meta: its index and finished epochs)."""
        if self.root is None:
            return
        write_atomic(self.root / "ckpt.safetensors", _safetensors_bytes(tensors))
        write_atomic(self.root / "ckpt.json", json.dumps(meta).encode())

    def load_checkpoint(self, gi: int) -> tuple[dict, dict] | None:
        """(meta, tensors) of group `gi` in progress, or None."""
        if self.root is None or not (self.root / "ckpt.json").exists():
            return None
        meta = json.loads((self.root / "ckpt.json").read_text())
        if meta.get("group") != gi:
            return None
        return meta, _load_safetensors(self.root / "ckpt.safetensors")


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict:
    """An optimizer's per-parameter state as flat tensors "opt.<param>.<key>" (for safetensors)."""
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            out[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict) -> None:
    """The inverse of `optimizer_tensors` (other keys of `tensors` are ignored)."""
    sd = opt.state_dict()
    state = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)
