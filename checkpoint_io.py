"""Checkpoint I/O, below every model and every trainer: shipped weights as safetensors + the JSON
Config beside them, training checkpoints (step_XXXXXXXX.pt, written atomically, read with
weights_only=True), and the fingerprint of a codec that an S2S model depends on.

A model's `load()` needs this module and nothing of its trainer.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path

import torch

from config import Config, config_json_path, save_config


# --- shipped weights ------------------------------------------------------------------------------

def export_safetensors(state_dict: dict, path, cfg: Config, fp16: bool = True, metadata: dict | None = None):
    """Shipped weights: safetensors (no code can hide in it) + the config JSON beside it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu().contiguous()
        tensors[k] = v.half() if fp16 and v.is_floating_point() else v
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)
    save_config(cfg, config_json_path(path))


def load_safetensors(path, device="cpu") -> dict:
    from safetensors.torch import load_file

    return {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path), device=str(device)).items()}


def codec_hash(codec_path) -> str:
    """What the S2S model depends on in a codec: the encoder and quantizer weights (the user
    latents and the agent codes), as fp16, so the fp32 and fp16 exports of one codec agree and a
    decoder fine-tuned with `train_codec_dac.py --decoder_only` keeps the hash (and the model)."""
    from safetensors import safe_open
    h = hashlib.sha256()
    with safe_open(str(codec_path), "pt") as f:
        for name in sorted(f.keys()):
            if name.startswith(("encoder.", "quantizer.")) and not name.endswith(".usage"):
                h.update(name.encode())
                h.update(f.get_tensor(name).to(torch.float16).numpy().tobytes())
    return h.hexdigest()[:16]


# --- training checkpoints -------------------------------------------------------------------------

def atomic_torch_save(obj, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a kill -9 at any moment leaves
    either the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


class Checkpoints:
    """step_XXXXXXXX.pt files in a run folder; keeps the newest `keep`; loads the newest good one."""

    pattern = re.compile(r"step_(\d+)\.pt$")

    def __init__(self, out_dir, keep: int = 3):
        self.dir = Path(out_dir)
        self.keep = keep

    def save(self, state: dict, step: int, cfg: Config) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"step_{step:08d}.pt"
        atomic_torch_save(state, path)
        save_config(cfg, self.dir / "config.json")
        for old in self.all()[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def all(self) -> list[Path]:
        found = [Path(p) for p in glob.glob(str(self.dir / "step_*.pt")) if self.pattern.search(p)]
        return sorted(found, key=lambda p: int(self.pattern.search(str(p)).group(1)))

    def load_latest(self, map_location="cpu") -> tuple[dict, Path] | tuple[None, None]:
        """Newest checkpoint that loads; a damaged one (disk full, foreign tampering) is skipped
        with a warning rather than ending the run."""
        for path in reversed(self.all()):
            try:
                return load_checkpoint(path, map_location), path
            except Exception as e:  # any unreadable file: fall back to the one before
                print(f"warning: skipping unreadable checkpoint {path}: {e}")
        return None, None
