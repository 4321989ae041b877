"""Training hygiene shared by the three train scripts: runtime setup (CPU, CUDA, torchrun DDP),
the LR schedule, a resumable data order, atomic checkpoints that survive kill -9, and export of
the shipped weights as safetensors + JSON config.

The scripts themselves stay one visible loop each (nanoGPT's train.py); this module holds only
what would otherwise be copied three times.
"""
from __future__ import annotations

import contextlib
import glob
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from config import Config, TrainConfig, config_json_path, save_config


# --- runtime --------------------------------------------------------------------------------------

@dataclass
class Runtime:
    device: torch.device
    rank: int
    world_size: int
    local_rank: int
    autocast_dtype: torch.dtype | None  # None: full fp32

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def setup_runtime(train: TrainConfig) -> Runtime:
    """Device, threads, seed and, under torchrun, the process group (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train.device=cuda but CUDA is not available on this machine")
    device = torch.device(f"cuda:{local_rank}" if want == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if train.threads > 0:
        torch.set_num_threads(train.threads)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    precision = train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else None
    seed_everything(train.seed + rank)
    return Runtime(device, rank, world_size, local_rank, dtype)


def ddp_module(model: torch.nn.Module):
    """The DistributedDataParallel inside `model` (through torch.compile's wrapper), or None."""
    while model is not None and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = getattr(model, "_orig_mod", None)
    return model


def sync_gradients(model: torch.nn.Module, sync: bool):
    """Gradient accumulation under DDP: averaging gradients across ranks costs a network round, so
    the micro-steps before the last of an optimizer step accumulate locally (DDP's `no_sync`) and
    the last one averages the sum. Forward and backward must both run inside this context."""
    ddp = ddp_module(model)
    return contextlib.nullcontext() if sync or ddp is None else ddp.no_sync()


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Gradients flow through `module` to its inputs but not into its weights (a critic in the
    generator's pass); its requires_grad flags are restored afterwards."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def rehearsal(module: torch.nn.Module, device: torch.device):
    """Passes that leave no trace: the RNG and `module`'s buffers (running statistics, usage
    counters) are put back afterwards, so the real passes that follow draw the same random numbers
    and count the same data as if the rehearsal had never run."""
    buffers = [b.detach().clone() for b in module.buffers()]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        yield
    with torch.no_grad():
        for b, saved in zip(module.buffers(), buffers):
            b.copy_(saved)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cleanup(rt: Runtime) -> None:
    if rt.ddp and dist.is_initialized():
        # Meet first: a rank that tears gloo down while rank 0 is still exporting can make the other
        # side's gloo thread abort ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


def lr_at(step: int, train: TrainConfig, total_steps: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to lr * lr_min_ratio. A time-boxed run (max_minutes)
    passes the share of its wall-clock budget spent: the decay follows whichever ends first."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    progress = min(1.0, max(time_progress, (step - train.warmup_steps) / max(1, total_steps - train.warmup_steps)))
    floor = train.lr * train.lr_min_ratio
    return floor + (train.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Deadline:
    """train.max_minutes as a wall clock started now (a resumed run gets the budget afresh)."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, time.time()

    def progress(self) -> float:
        return min(1.0, (time.time() - self.start) / self.seconds) if self.seconds > 0 else 0.0

    def passed(self, rt: "Runtime | None" = None) -> bool:
        """Under DDP every rank must stop at the same step: rank 0's clock decides for all."""
        if self.seconds <= 0:
            return False
        late = time.time() - self.start >= self.seconds
        if rt is not None and rt.ddp:
            flag = torch.tensor([float(late)], device=rt.device)
            dist.broadcast(flag, 0)
            late = bool(flag.item())
        return late


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --- a data order that resumes exactly ------------------------------------------------------------

def optimizer_steps_per_epoch(n_micro_batches: int, grad_accum: int) -> int:
    """Whole optimizer steps in an epoch of `n_micro_batches`; the remainder (< grad_accum) is
    dropped, so a step never mixes two epochs and a resumed epoch starts on a step boundary."""
    if n_micro_batches < grad_accum:
        raise SystemExit(f"an epoch has {n_micro_batches} batches per rank, fewer than train.grad_accum="
                         f"{grad_accum}: lower grad_accum or batch_size, or use fewer processes")
    return n_micro_batches // grad_accum


def epoch_batches(n_items: int, batch_size: int, epoch: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> list[list[int]]:
    """The batches of one epoch for this rank: a permutation fixed by (seed, epoch), so a resumed run
    can skip the batches it already trained on and see exactly the rest. Every rank gets the same
    number of batches (DDP needs the same step count everywhere)."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(n_items, generator=g).tolist()
    per_rank = n_items // world_size
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    n_batches = len(mine) // batch_size
    if n_batches == 0 and mine:  # a tiny corpus still trains: one short batch
        return [mine]
    return [mine[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


def make_loader(dataset, batches: list[list[int]], train: TrainConfig, rt: Runtime, collate_fn=None):
    """A DataLoader over precomputed batches. It gets its own generator: a DataLoader otherwise draws
    its worker seed from the global RNG, and a resumed run would then drift from an unbroken one."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=train.num_workers,
                                       pin_memory=rt.device.type == "cuda", collate_fn=collate_fn,
                                       generator=torch.Generator())


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Randomness of one training item (crop offset, augmentation) from its coordinates, not from a
    stream: it is the same after a resume and the same whatever the number of loader workers."""
    return np.random.default_rng([seed, epoch, index])


# --- checkpoints -------------------------------------------------------------------------------

def _atomic_torch_save(obj, path: Path) -> None:
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


class Checkpoints:
    """step_XXXXXXXX.pt files in a run folder; keeps the newest `keep`; loads the newest good one."""

    pattern = re.compile(r"step_(\d+)\.pt$")

    def __init__(self, out_dir, keep: int = 3):
        self.dir = Path(out_dir)
        self.keep = keep

    def save(self, state: dict, step: int, cfg: Config) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"step_{step:08d}.pt"
        _atomic_torch_save(state, path)
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


def load_checkpoint(path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state(rt: Runtime | None = None) -> dict:
    """This process's torch RNG. Under DDP every rank draws its own numbers (seeded seed + rank), so
    the state also carries every rank's under "ranks": a collective, call it on all ranks."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if rt is not None and rt.ddp:
        ranks = [None] * rt.world_size
        dist.all_gather_object(ranks, state)
        state = dict(state, ranks=ranks)
    return state


def set_rng_state(state: dict, rank: int = 0) -> None:
    """Restore this rank's RNG (rank 0's when the checkpoint had fewer ranks or none recorded)."""
    ranks = state.get("ranks") or []
    if rank < len(ranks):
        state = ranks[rank]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_resume(resume: str | None, ckpts: Checkpoints):
    """--resume (auto: newest good checkpoint in the run folder) or --resume PATH."""
    if resume is None:
        return None, None
    if resume == "auto":
        state, path = ckpts.load_latest()
        if state is None:
            print(f"--resume: no checkpoint in {ckpts.dir} yet, starting fresh")
        return state, path
    return load_checkpoint(resume), Path(resume)


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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def tensorboard(rt: Runtime, out_dir):
    """A SummaryWriter on rank 0, None elsewhere (only one process logs)."""
    if not rt.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(out_dir) / "tb"))
